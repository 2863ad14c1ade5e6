//! A progressive rollout: each wave as a bar with its counts in words, its steps and its
//! failed agents; approve, pause, resume, abort (after a confirmation). Each action is the
//! fleet's own operation, which checks the role and records the step.

use actix_web::{HttpResponse, web};
use agentpkg_fleet::RolloutDetail;
use agentpkg_http::RequestContext;
use agentpkg_model::{Role, RolloutState, WaveCounts, WaveSize};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::{Layout, fleet, page, see_other};
use crate::WebState;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

/// One wave: its counts, and the bar's segments (kind, x, width in % of the wave).
struct WaveRow {
    number: usize,
    size: String,
    counts: WaveCounts,
    segments: Vec<(&'static str, f64, f64)>,
    summary: String,
    baking_since: Option<String>,
}

impl WaveRow {
    fn of(i: usize, size: WaveSize, c: WaveCounts, baking: Option<chrono::DateTime<Utc>>) -> Self {
        let size = match size {
            WaveSize::Agents(n) => format!("{n} agents"),
            WaveSize::Percent(p) => format!("{p} %"),
        };
        let waiting = c.offered + c.installed;
        let baking_now = c.healthy.saturating_sub(c.baked);
        let parts = [
            ("baked", c.baked),
            ("baking", baking_now),
            ("waiting", waiting),
            ("retrying", c.retrying),
            ("failed", c.failed_all),
            ("reverting", c.reverting),
            ("reverted", c.reverted),
        ];
        let total = c.members.max(1) as f64;
        let mut x = 0.0;
        let mut segments = Vec::new();
        for (kind, n) in parts {
            if n > 0 {
                let w = n as f64 / total * 100.0;
                segments.push((kind, x, w));
                x += w;
            }
        }
        let summary = format!(
            "{} agents: {} healthy for the bake time, {} baking, {} installing or not yet reported, {} retrying, {} failed, {} reverting, {} reverted",
            c.members,
            c.baked,
            baking_now,
            waiting,
            c.retrying,
            c.failed_all,
            c.reverting,
            c.reverted
        );
        Self {
            number: i + 1,
            size,
            counts: c,
            segments,
            summary,
            baking_since: baking.map(format::exact),
        }
    }
}

#[derive(Template)]
#[template(path = "rollout.html")]
struct RolloutPage {
    layout: Layout,
    assignment: i64,
    id: i64,
    version: String,
    from: String,
    state: String,
    cause: String,
    wave: usize,
    waves: Vec<WaveRow>,
    transitions: Vec<(u64, String, String, usize, String, String)>,
    failures: Vec<(String, usize, String, String, String)>,
    can_approve: bool,
    can_pause: bool,
    can_resume: bool,
    can_abort: bool,
    admin: bool,
    notice: Option<String>,
}

fn rollout_page(who: &SignedIn, d: RolloutDetail, notice: Option<String>) -> RolloutPage {
    let r = &d.rollout;
    let admin = who.is(Role::Admin);
    RolloutPage {
        layout: Layout::of(format!("Rollout {} of {}", r.id, r.version), who),
        assignment: r.assignment_id,
        id: r.id,
        version: r.version.to_string(),
        from: r
            .from_version
            .as_ref()
            .map_or_else(|| "nothing".to_owned(), ToString::to_string),
        state: r.state.to_string(),
        cause: r.cause.clone(),
        wave: r.wave + 1,
        waves: d
            .waves
            .iter()
            .enumerate()
            .map(|(i, (c, baking))| WaveRow::of(i, r.plan.waves[i], *c, *baking))
            .collect(),
        transitions: d
            .transitions
            .iter()
            .rev()
            .map(|t| {
                (
                    t.step,
                    format::exact(t.at),
                    t.state.to_string(),
                    t.wave + 1,
                    t.cause.clone(),
                    t.actor.clone().unwrap_or_else(|| "engine".into()),
                )
            })
            .collect(),
        failures: d
            .failures
            .iter()
            .map(|m| {
                (
                    m.uid.to_string(),
                    m.wave + 1,
                    m.failure.clone().unwrap_or_default(),
                    m.failure_message.clone(),
                    if m.acknowledged {
                        "acknowledged".into()
                    } else {
                        m.phase.to_string()
                    },
                )
            })
            .collect(),
        can_approve: admin && r.state == RolloutState::WaitingForApproval,
        can_pause: admin
            && r.state.is_active()
            && !matches!(r.state, RolloutState::Paused | RolloutState::Reverting),
        can_resume: admin && r.state == RolloutState::Paused,
        can_abort: admin && r.state.is_active(),
        admin,
        notice,
    }
}

#[derive(Deserialize)]
pub struct NoticeParam {
    done: Option<String>,
}

pub async fn rollout(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<(i64, i64)>,
    query: web::Query<NoticeParam>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let (assignment, id) = path.into_inner();
    let detail = fleet(&state)?
        .rollout_detail(assignment, id, &ctx.caller(&who.credential))
        .await?;
    let notice = query.done.as_deref().and_then(|d| {
        Some(
            match d {
                "approve" => "The wave was approved.",
                "pause" => "The rollout was paused: no agent is newly offered its version.",
                "resume" => "The rollout was resumed; the failures so far are acknowledged.",
                "abort" => "The rollout was aborted.",
                _ => return None,
            }
            .to_owned(),
        )
    });
    page(&rollout_page(&who, detail, notice))
}

#[derive(Deserialize)]
pub struct StepForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    revert: Option<String>,
}

/// Approve, pause, resume or abort, as the fleet decides.
pub async fn rollout_step(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<(i64, i64, String)>,
    form: web::Form<StepForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let (assignment, id, action) = path.into_inner();
    let fleet = fleet(&state)?;
    let caller = ctx.caller(&who.credential);
    let reason = form.reason.as_str();
    match action.as_str() {
        "approve" => {
            fleet
                .approve_rollout(assignment, id, reason, &caller)
                .await?
        }
        "pause" => fleet.pause_rollout(assignment, id, reason, &caller).await?,
        "resume" => {
            fleet
                .resume_rollout(assignment, id, reason, &caller)
                .await?
        }
        "abort" => {
            let revert = form.revert.is_some();
            fleet
                .abort_rollout(assignment, id, revert, reason, &caller)
                .await?
        }
        _ => return Err(WebError::NotFound("no such action".into())),
    };
    Ok(see_other(&format!(
        "/assignments/{assignment}/rollouts/{id}?done={action}"
    )))
}

#[derive(Template)]
#[template(path = "rollout_abort.html")]
struct AbortPage {
    layout: Layout,
    assignment: i64,
    id: i64,
    version: String,
}

/// Asks before aborting.
pub async fn confirm_abort(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Admin)?;
    let (assignment, id) = path.into_inner();
    let d = fleet(&state)?
        .rollout_detail(assignment, id, &ctx.caller(&who.credential))
        .await?;
    page(&AbortPage {
        layout: Layout::of(format!("Abort rollout {id}"), &who),
        assignment,
        id,
        version: d.rollout.version.to_string(),
    })
}
