//! Progressive rollouts of an assignment: create, watch, approve, pause, resume, abort.
//! Each handler parses, calls one fleet operation, renders.

use actix_web::{HttpResponse, web};
use agentpkg_fleet::RolloutDetail;
use agentpkg_model::{
    Approval, FailureRule, OnFailure, Retry, Rollout, RolloutMember, RolloutPlan,
    RolloutTransition, SuccessRule, Version, WaveCounts, WaveSize, Window,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::extractors::optional_json;
use crate::{Admin, ApiError, ApiState, RequestContext, Viewer};

/// A rollout to start: the version, and the plan that moves the assignment to it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRolloutBody {
    /// The version to roll out (it must have an active build).
    version: String,
    /// Each wave's size counted from the first: `{"agents": 5}` or `{"percent": 10}`; the
    /// last must be `{"percent": 100}`.
    #[schema(value_type = Vec<Object>, example = json!([{"agents": 5}, {"percent": 10}, {"percent": 50}, {"percent": 100}]))]
    waves: Vec<WaveSize>,
    /// `{"healthy_for_secs": 600, "min_ratio": 0.95}` (the defaults).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    success: SuccessRule,
    /// `{"max_failed": 3, "max_ratio": 0.05, "min_sample": 5, "count": ["install_failed",
    /// "unhealthy_after_install", "no_report_within_secs:1800"]}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    failure: FailureRule,
    /// `pause` (the default) or `revert`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    on_failure: OnFailure,
    /// `{"cron": "0 22 * * 1-5", "duration_secs": 14400, "timezone": "Europe/Berlin"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    window: Option<Window>,
    /// `none` (the default), `each_wave` or `first_wave`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    approval: Approval,
    /// When the first wave may start (now when absent).
    #[serde(default)]
    start_at: Option<DateTime<Utc>>,
    /// `{"attempts": 2, "backoff_secs": 300}`: failed installs offered again, each pause
    /// twice the last, before they count.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    retry: Retry,
}

/// A reason, recorded with the step.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonBody {
    #[serde(default)]
    reason: String,
}

/// How to abort.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbortBody {
    /// Offer every agent the rollout moved the version it reported before.
    #[serde(default)]
    revert: bool,
    #[serde(default)]
    reason: String,
}

/// A rollout.
#[derive(Serialize, ToSchema)]
pub(crate) struct RolloutSummaryView {
    id: i64,
    assignment_id: i64,
    version: String,
    /// The version the assignment offered before.
    from_version: Option<String>,
    /// `scheduled`, `waiting_for_window`, `waiting_for_approval`, `rolling`, `baking`,
    /// `paused`, `reverting`, `reverted`, `completed` or `aborted`.
    state: String,
    /// Why it is in that state.
    cause: String,
    /// The current wave, or the next to start (1-based).
    wave: usize,
    waves: usize,
    /// The highest wave approved (1-based).
    approved_wave: Option<usize>,
    #[schema(value_type = Object)]
    plan: RolloutPlan,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Rollout> for RolloutSummaryView {
    fn from(r: &Rollout) -> Self {
        Self {
            id: r.id,
            assignment_id: r.assignment_id,
            version: r.version.to_string(),
            from_version: r.from_version.as_ref().map(ToString::to_string),
            state: r.state.to_string(),
            cause: r.cause.clone(),
            wave: r.wave + 1,
            waves: r.plan.waves.len(),
            approved_wave: r.approved_wave.map(|w| w + 1),
            plan: r.plan.clone(),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One wave: its agents by phase.
#[derive(Serialize, ToSchema)]
pub(crate) struct WaveView {
    /// 1-based.
    wave: usize,
    #[schema(value_type = Object)]
    size: WaveSize,
    /// Agents this wave added.
    agents: u64,
    /// Offered the version, nothing reported yet.
    offered: u64,
    /// Installed, health not yet good.
    installed: u64,
    /// Installed and healthy (baking or baked).
    healthy: u64,
    /// Healthy for the whole bake time.
    baked: u64,
    /// Failures that count (not acknowledged).
    failed: u64,
    install_failed: u64,
    unhealthy_after_install: u64,
    silent: u64,
    /// Failed installs waiting to be offered again.
    retrying: u64,
    reverting: u64,
    reverted: u64,
    /// When the wave began to bake (on the rollout's clock).
    baking_since: Option<DateTime<Utc>>,
}

impl WaveView {
    fn new(i: usize, size: WaveSize, c: &WaveCounts, baking_since: Option<DateTime<Utc>>) -> Self {
        Self {
            wave: i + 1,
            size,
            agents: c.members,
            offered: c.offered,
            installed: c.installed,
            healthy: c.healthy,
            baked: c.baked,
            failed: c.failed,
            install_failed: c.install_failed,
            unhealthy_after_install: c.unhealthy,
            silent: c.silent,
            retrying: c.retrying,
            reverting: c.reverting,
            reverted: c.reverted,
            baking_since,
        }
    }
}

/// One step a rollout took.
#[derive(Serialize, ToSchema)]
pub(crate) struct TransitionView {
    step: u64,
    /// On the rollout's clock.
    at: DateTime<Utc>,
    state: String,
    /// 1-based.
    wave: usize,
    cause: String,
    /// Who, when a person took it.
    actor: Option<String>,
}

impl From<&RolloutTransition> for TransitionView {
    fn from(t: &RolloutTransition) -> Self {
        Self {
            step: t.step,
            at: t.at,
            state: t.state.to_string(),
            wave: t.wave + 1,
            cause: t.cause.clone(),
            actor: t.actor.clone(),
        }
    }
}

/// A failed agent of a rollout.
#[derive(Serialize, ToSchema)]
pub(crate) struct RolloutAgentView {
    instance_uid: String,
    wave: usize,
    /// `failed` or `retrying`.
    phase: String,
    attempts: u32,
    /// `install_failed`, `unhealthy_after_install` or `no_report`.
    failure: Option<String>,
    message: String,
    failed_at: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
    /// Acknowledged by a resume: it no longer counts.
    acknowledged: bool,
    /// The version it reported before (what a revert offers).
    previous_version: String,
}

impl From<&RolloutMember> for RolloutAgentView {
    fn from(m: &RolloutMember) -> Self {
        Self {
            instance_uid: m.uid.to_string(),
            wave: m.wave + 1,
            phase: m.phase.to_string(),
            attempts: m.attempts,
            failure: m.failure.clone(),
            message: m.failure_message.clone(),
            failed_at: m.failed_at,
            retry_at: m.retry_at,
            acknowledged: m.acknowledged,
            previous_version: m.previous_version.clone(),
        }
    }
}

/// Where a rollout stands, wave by wave.
#[derive(Serialize, ToSchema)]
pub(crate) struct RolloutView {
    #[serde(flatten)]
    rollout: RolloutSummaryView,
    /// Now on the rollout's clock (the wall clock unless `fleet.rollout_time_scale` speeds
    /// it up).
    now: DateTime<Utc>,
    per_wave: Vec<WaveView>,
    transitions: Vec<TransitionView>,
    failures: Vec<RolloutAgentView>,
}

impl From<RolloutDetail> for RolloutView {
    fn from(d: RolloutDetail) -> Self {
        Self {
            rollout: RolloutSummaryView::from(&d.rollout),
            now: d.now,
            per_wave: d
                .waves
                .iter()
                .enumerate()
                .map(|(i, (c, baking))| WaveView::new(i, d.rollout.plan.waves[i], c, *baking))
                .collect(),
            transitions: d.transitions.iter().map(TransitionView::from).collect(),
            failures: d.failures.iter().map(RolloutAgentView::from).collect(),
        }
    }
}

async fn detail(
    state: &ApiState,
    ctx: &RequestContext,
    credential: &agentpkg_packagemgr::Credential,
    assignment: i64,
    id: i64,
) -> Result<RolloutView, ApiError> {
    Ok(state
        .fleet
        .rollout_detail(assignment, id, &ctx.caller(credential))
        .await?
        .into())
}

/// Start a progressive rollout
///
/// Moves the assignment to `version` wave by wave: each wave is done when `min_ratio` of
/// its agents report the version installed and healthy for `healthy_for_secs`; the next
/// starts inside the maintenance window and after approval where asked. Past a failure
/// threshold it pauses, or reverts every agent it moved to the version each reported
/// before. The assignment offers its current version to the others until the rollout
/// completes. Needs the admin role.
#[utoipa::path(
    post,
    path = "/api/v1/assignments/{id}/rollouts",
    tag = "fleet",
    params(("id" = i64, Path, description = "Assignment id")),
    request_body = NewRolloutBody,
    responses(
        (status = 201, description = "The rollout", body = RolloutView),
        (status = 400, description = "An invalid plan or version", body = ErrorBody),
        (status = 404, description = "No such assignment", body = ErrorBody),
        (status = 409, description = "The assignment has a rollout moving (`rollout_conflict`)", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    admin: Admin,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    body: web::Json<NewRolloutBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let version = Version::parse(&b.version)?;
    let plan = RolloutPlan {
        waves: b.waves,
        success: b.success,
        failure: b.failure,
        on_failure: b.on_failure,
        window: b.window,
        approval: b.approval,
        start_at: b.start_at,
        retry: b.retry,
    };
    let credential = &admin.principal.0;
    let created = state
        .fleet
        .start_rollout(*id, version, plan, &ctx.caller(credential))
        .await?;
    let view = detail(&state, &ctx, credential, *id, created.id).await?;
    Ok(HttpResponse::Created().json(view))
}

/// List an assignment's rollouts
///
/// Newest first. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/assignments/{id}/rollouts",
    tag = "fleet",
    params(("id" = i64, Path, description = "Assignment id")),
    responses(
        (status = 200, description = "Its rollouts", body = Vec<RolloutSummaryView>),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such assignment", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    viewer: Viewer,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let all = state
        .fleet
        .rollouts(*id, &ctx.caller(&viewer.principal.0))
        .await?;
    Ok(HttpResponse::Ok().json(all.iter().map(RolloutSummaryView::from).collect::<Vec<_>>()))
}

/// Where a rollout stands
///
/// Its state and cause; per wave its agents offered, installed, healthy, baked (healthy
/// for the bake time), failed by kind, retrying, reverting and reverted, and since when
/// it bakes; every step with its cause and who took it; the failed agents with their
/// messages. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/assignments/{id}/rollouts/{rollout}",
    tag = "fleet",
    params(
        ("id" = i64, Path, description = "Assignment id"),
        ("rollout" = i64, Path, description = "Rollout id"),
    ),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, description = "An id is not an integer", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    viewer: Viewer,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (assignment, id) = path.into_inner();
    Ok(HttpResponse::Ok().json(detail(&state, &ctx, &viewer.principal.0, assignment, id).await?))
}

macro_rules! step_route {
    ($name:ident, $path:literal, $summary:literal, $what:literal, $call:ident) => {
        #[doc = $summary]
        ///
        #[doc = $what]
        /// Recorded with who and why. Needs the admin role.
        #[utoipa::path(
            post,
            path = $path,
            tag = "fleet",
            params(
                ("id" = i64, Path, description = "Assignment id"),
                ("rollout" = i64, Path, description = "Rollout id"),
            ),
            request_body = ReasonBody,
            responses(
                (status = 200, description = "The rollout", body = RolloutView),
                (status = 400, description = "An invalid body or id", body = ErrorBody),
                (status = 404, description = "No such rollout", body = ErrorBody),
                (status = 409, description = "Not possible in its state (`rollout_conflict`)", body = ErrorBody),
            ),
        )]
        pub(crate) async fn $name(
            admin: Admin,
            ctx: RequestContext,
            state: web::Data<ApiState>,
            path: web::Path<(i64, i64)>,
            body: web::Bytes,
        ) -> Result<HttpResponse, ApiError> {
            let (assignment, id) = path.into_inner();
            let reason = optional_json::<ReasonBody>(&body)?.reason;
            let credential = &admin.principal.0;
            state
                .fleet
                .$call(assignment, id, &reason, &ctx.caller(credential))
                .await?;
            Ok(HttpResponse::Ok().json(detail(&state, &ctx, credential, assignment, id).await?))
        }
    };
}

step_route!(
    approve,
    "/api/v1/assignments/{id}/rollouts/{rollout}/approve",
    "Approve the wave a rollout waits for",
    "The wave starts (inside its maintenance window, if it has one).",
    approve_rollout
);
step_route!(
    pause,
    "/api/v1/assignments/{id}/rollouts/{rollout}/pause",
    "Pause a rollout",
    "No agent is newly offered its version until it is resumed; agents it moved keep it.",
    pause_rollout
);
step_route!(
    resume,
    "/api/v1/assignments/{id}/rollouts/{rollout}/resume",
    "Resume a paused rollout",
    "It continues the same wave; the failures seen so far are acknowledged and do not trip it again.",
    resume_rollout
);

/// Abort a rollout
///
/// With `revert`, every agent it moved is offered the version it reported before, and the
/// rollout ends `reverted` once they all run it healthy; without, it ends `aborted` and its
/// agents keep what they have. Recorded with who and why. Needs the admin role.
#[utoipa::path(
    post,
    path = "/api/v1/assignments/{id}/rollouts/{rollout}/abort",
    tag = "fleet",
    params(
        ("id" = i64, Path, description = "Assignment id"),
        ("rollout" = i64, Path, description = "Rollout id"),
    ),
    request_body = AbortBody,
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 400, description = "An invalid body or id", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "It already ended (`rollout_conflict`)", body = ErrorBody),
    ),
)]
pub(crate) async fn abort(
    admin: Admin,
    ctx: RequestContext,
    state: web::Data<ApiState>,
    path: web::Path<(i64, i64)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (assignment, id) = path.into_inner();
    let AbortBody { revert, reason } = optional_json(&body)?;
    let credential = &admin.principal.0;
    state
        .fleet
        .abort_rollout(assignment, id, revert, &reason, &ctx.caller(credential))
        .await?;
    Ok(HttpResponse::Ok().json(detail(&state, &ctx, credential, assignment, id).await?))
}
