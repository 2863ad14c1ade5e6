//! Assignments: list and create them, see one with its agents' statuses and its rollouts,
//! start a progressive rollout (`rollouts.rs` shows and moves it). Every action is
//! the fleet's own operation (the same the API calls), which checks the role and records
//! the event; the pages only show a control to whom it would allow it.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;
use agentpkg_model::{
    Assignment, NewAssignment, PackageName, Retry, Role, RolloutPlan, SuccessRule, ValidationError,
    Version, VersionChoice, WaveSize,
};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::{Layout, fleet, page, secured, see_other};
use crate::WebState;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

/// An assignment as the pages show it.
struct AssignmentRow {
    id: i64,
    package: String,
    version: String,
    offer_as: String,
    selector: String,
    rollout_percent: u8,
    paused: Option<String>,
    rollout_id: Option<i64>,
}

impl AssignmentRow {
    fn of(a: &Assignment) -> Self {
        Self {
            id: a.id,
            package: a.package.to_string(),
            version: a.version.to_string(),
            offer_as: if a.offer_as.is_empty() {
                "top level".into()
            } else {
                a.offer_as.clone()
            },
            selector: if a.selector.is_empty() {
                "every agent".into()
            } else {
                a.selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            rollout_percent: a.rollout_percent,
            paused: a.paused.clone(),
            rollout_id: a.rollout_id,
        }
    }
}

#[derive(Template)]
#[template(path = "assignments.html")]
struct AssignmentsPage {
    layout: Layout,
    assignments: Vec<AssignmentRow>,
    admin: bool,
    error: Option<String>,
    form: NewAssignmentForm,
}

#[derive(Deserialize, Default, Clone)]
pub struct NewAssignmentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    offer_as: String,
    /// `key=value`, one per line or separated by commas.
    #[serde(default)]
    selector: String,
}

async fn assignments_page(
    who: &SignedIn,
    state: &WebState,
    error: Option<String>,
    form: NewAssignmentForm,
) -> Result<AssignmentsPage, WebError> {
    let assignments = fleet(state)?
        .assignments_for(&who.caller())
        .await?
        .iter()
        .map(AssignmentRow::of)
        .collect();
    Ok(AssignmentsPage {
        layout: Layout::of("Assignments", who),
        assignments,
        admin: who.is(Role::Admin),
        error,
        form,
    })
}

pub async fn assignments(
    who: SignedIn,
    state: web::Data<WebState>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let form = NewAssignmentForm {
        version: "latest".into(),
        ..NewAssignmentForm::default()
    };
    page(&assignments_page(&who, &state, None, form).await?)
}

fn selector(text: &str) -> Result<BTreeMap<String, String>, ValidationError> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').ok_or_else(|| {
                ValidationError::new(
                    "selector",
                    format!("{l:?} is not key=value (for example service.name=otelcol)"),
                )
            })?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

pub async fn create_assignment(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<NewAssignmentForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    let created = async {
        let new = NewAssignment {
            package: PackageName::parse(f.package.trim())
                .map_err(|e| ValidationError::new("package", e.message))?,
            version: VersionChoice::parse(f.version.trim())?,
            offer_as: f.offer_as.trim().to_owned(),
            selector: selector(&f.selector)?,
            rollout_percent: 100,
            max_failure_ratio: 0.2,
            v_prefix: false,
            signature: Default::default(),
        };
        fleet(&state)?
            .assign(new, &ctx.caller(&who.credential))
            .await
            .map_err(|e| match e {
                agentpkg_packagemgr::Error::NotFound(agentpkg_model::Entity::Package) => {
                    WebError::Refused(
                        actix_web::http::StatusCode::NOT_FOUND,
                        format!("there is no package {} to assign", f.package.trim()),
                    )
                }
                other => other.into(),
            })
    }
    .await;
    match created {
        Ok(a) => Ok(see_other(&format!("/assignments/{}", a.id))),
        Err(WebError::Refused(status, message)) => {
            let html = assignments_page(&who, &state, Some(message), f)
                .await?
                .render()?;
            Ok(secured(HttpResponse::build(status), html))
        }
        Err(other) => Err(other),
    }
}

/// A rollout in a list.
struct RolloutRow {
    id: i64,
    version: String,
    state: String,
    wave: usize,
    waves: usize,
    cause: String,
    created: String,
}

#[derive(Template)]
#[template(path = "assignment.html")]
struct AssignmentPage {
    layout: Layout,
    a: AssignmentRow,
    statuses: Vec<(String, String, u64)>,
    rollouts: Vec<RolloutRow>,
    admin: bool,
    error: Option<String>,
    form: NewRolloutForm,
}

#[derive(Deserialize, Clone)]
pub struct NewRolloutForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: String,
    /// Waves counted from the first: `5 agents, 10%, 50%, 100%`.
    #[serde(default)]
    waves: String,
    #[serde(default)]
    bake_minutes: String,
    #[serde(default)]
    min_healthy_percent: String,
    #[serde(default)]
    max_failed_percent: String,
    #[serde(default)]
    on_failure: String,
    #[serde(default)]
    approval: String,
    #[serde(default)]
    retries: String,
}

impl Default for NewRolloutForm {
    fn default() -> Self {
        Self {
            csrf: String::new(),
            version: String::new(),
            waves: "5 agents, 10%, 50%, 100%".into(),
            bake_minutes: "10".into(),
            min_healthy_percent: "95".into(),
            max_failed_percent: "5".into(),
            on_failure: "pause".into(),
            approval: "first_wave".into(),
            retries: "0".into(),
        }
    }
}

fn number<T: std::str::FromStr>(
    field: &'static str,
    text: &str,
    what: &str,
) -> Result<T, ValidationError> {
    text.trim()
        .parse()
        .map_err(|_| ValidationError::new(field, format!("{:?} is not {what}", text.trim())))
}

impl NewRolloutForm {
    fn plan(&self) -> Result<(Version, RolloutPlan), ValidationError> {
        let version = Version::parse(self.version.trim())
            .map_err(|e| ValidationError::new("version", e.message))?;
        let waves = self
            .waves
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| {
                if let Some(p) = w.strip_suffix('%') {
                    Ok(WaveSize::Percent(number("waves", p, "a percentage")?))
                } else {
                    let n = w.trim_end_matches("agents").trim_end_matches("agent");
                    Ok(WaveSize::Agents(number("waves", n, "a number of agents")?))
                }
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        let bake: u64 = number("bake_minutes", &self.bake_minutes, "a number of minutes")?;
        let healthy: f64 = number(
            "min_healthy_percent",
            &self.min_healthy_percent,
            "a percentage",
        )?;
        let failed: f64 = number(
            "max_failed_percent",
            &self.max_failed_percent,
            "a percentage",
        )?;
        let retries: u32 = number("retries", &self.retries, "a number of retries")?;
        let plan = RolloutPlan {
            waves,
            success: SuccessRule {
                healthy_for_secs: bake.saturating_mul(60),
                min_ratio: healthy / 100.0,
            },
            failure: agentpkg_model::FailureRule {
                max_ratio: Some(failed / 100.0),
                ..agentpkg_model::FailureRule::default()
            },
            on_failure: self.on_failure.parse()?,
            window: None,
            approval: self.approval.parse()?,
            start_at: None,
            retry: Retry {
                attempts: retries,
                backoff_secs: 300,
            },
        };
        plan.check()?;
        Ok((version, plan))
    }
}

async fn assignment_page(
    who: &SignedIn,
    state: &WebState,
    ctx: &RequestContext,
    id: i64,
    error: Option<String>,
    form: NewRolloutForm,
) -> Result<AssignmentPage, WebError> {
    let fleet = fleet(state)?;
    let caller = ctx.caller(&who.credential);
    let rollouts = fleet.rollouts(id, &caller).await?;
    let status = fleet.rollout_status(id).await?;
    let now = Utc::now();
    Ok(AssignmentPage {
        layout: Layout::of(format!("Assignment {id}"), who),
        a: AssignmentRow::of(&status.assignment),
        statuses: status
            .counts
            .into_iter()
            .map(|((version, s), n)| (version, s.to_string(), n))
            .collect(),
        rollouts: rollouts
            .iter()
            .map(|r| RolloutRow {
                id: r.id,
                version: r.version.to_string(),
                state: r.state.to_string(),
                wave: r.wave + 1,
                waves: r.plan.waves.len(),
                cause: r.cause.clone(),
                created: format::ago(r.created_at, now),
            })
            .collect(),
        admin: who.is(Role::Admin),
        error,
        form,
    })
}

pub async fn assignment(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    page(&assignment_page(&who, &state, &ctx, *path, None, NewRolloutForm::default()).await?)
}

pub async fn start_rollout(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<NewRolloutForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let id = *path;
    let f = form.into_inner();
    let started = async {
        let (version, plan) = f.plan()?;
        Ok::<_, WebError>(
            fleet(&state)?
                .start_rollout(id, version, plan, &ctx.caller(&who.credential))
                .await?,
        )
    }
    .await;
    match started {
        Ok(r) => Ok(see_other(&format!("/assignments/{id}/rollouts/{}", r.id))),
        Err(WebError::Refused(status, message)) => {
            let html = assignment_page(&who, &state, &ctx, id, Some(message), f)
                .await?
                .render()?;
            Ok(secured(HttpResponse::build(status), html))
        }
        Err(other) => Err(other),
    }
}
