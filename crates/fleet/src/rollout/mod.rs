//! Progressive rollouts: an assignment moved to a new version wave by wave, each wave
//! promoted when its agents report the version installed **and** healthy for the bake
//! time, inside a maintenance window and after approval where asked; paused or reverted
//! past a failure threshold.
//!
//! - The operations an admin calls (create, approve, pause, resume, abort) are here.
//! - The engine that takes the automatic steps is `engine.rs`: it runs on one replica at a
//!   time (a lease in the database), and a step is taken once even if two replicas decide
//!   it (the rollout's step counter guards the write).
//! - What an agent's message says about its place in a rollout is `observe.rs`.
//! - What a member is offered is decided in `offers.rs`, from its membership.
//!
//! Every state lives in the database, so a restart or the loss of a replica mid-wave
//! loses nothing.

mod engine;
mod observe;
mod waves;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use agentpkg_model::{
    Agent, AgentUid, Assignment, AuditAction, Entity, MemberPhase, NewRollout, Role, Rollout,
    RolloutClock, RolloutMember, RolloutPlan, RolloutState, RolloutTransition, ValidationError,
    Version, VersionChoice, WaveCounts,
};
use agentpkg_packagemgr::{Caller, Error};
use agentpkg_store::{DynRolloutStore, RolloutStep, StoreError};
use chrono::{DateTime, Utc};

pub use engine::{DEFAULT_ROLLOUT_TICK, TickObserver};
pub(crate) use waves::Backlogs;
pub use waves::DEFAULT_WAVE_STEP_AGENTS;

use crate::agents::Fleet;

/// An agent's membership in the rollout that governs one of its assignments.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) member: RolloutMember,
    pub(crate) rollout: Arc<Rollout>,
    pub(crate) offer_as: String,
}

/// Memberships by rollout id.
pub(crate) type Members = BTreeMap<i64, Member>;

/// A rollout with where each wave stands, its steps, and its failed agents.
#[derive(Debug, Clone)]
pub struct RolloutDetail {
    pub rollout: Rollout,
    /// Per wave of the plan (also those not started): its agents by phase, and since when
    /// it bakes (on the rollout's clock).
    pub waves: Vec<(WaveCounts, Option<DateTime<Utc>>)>,
    pub transitions: Vec<RolloutTransition>,
    /// Failed agents (and those waiting for a retry), with their messages; at most 200.
    pub failures: Vec<RolloutMember>,
    /// Now, on the rollout's clock.
    pub now: DateTime<Utc>,
}

impl Fleet {
    fn rollout_store(&self) -> Result<&DynRolloutStore, Error> {
        self.rollouts.as_ref().ok_or_else(|| {
            Error::RolloutConflict("this fleet was built without rollouts".to_owned())
        })
    }

    /// The clock rollout `r` runs on.
    pub fn rollout_clock(&self, r: &Rollout) -> RolloutClock {
        RolloutClock {
            anchor: r.created_at,
            scale: self.rollout_scale,
        }
    }

    /// A rollout's fixed parts (version, plan, creation), read once per replica.
    async fn cached_rollout(&self, id: i64) -> Result<Option<Arc<Rollout>>, Error> {
        if let Some(r) = self
            .rollout_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(Some(r.clone()));
        }
        let Some(found) = self.rollout_store()?.rollout(id).await? else {
            return Ok(None);
        };
        let found = Arc::new(found);
        self.rollout_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, found.clone());
        Ok(Some(found))
    }

    /// The agent's memberships in the rollouts that govern `assignments` (none read when
    /// no assignment has a rollout).
    pub(crate) async fn members_of(
        &self,
        uid: &AgentUid,
        assignments: &[Assignment],
    ) -> Result<Members, Error> {
        let governed: BTreeMap<i64, &Assignment> = assignments
            .iter()
            .filter_map(|a| a.rollout_id.map(|r| (r, a)))
            .collect();
        let Some(store) = self.rollouts.as_ref().filter(|_| !governed.is_empty()) else {
            return Ok(Members::new());
        };
        let mut members = Members::new();
        for member in store
            .memberships(uid, governed.keys().copied().collect())
            .await?
        {
            let Some(rollout) = self.cached_rollout(member.rollout_id).await? else {
                continue;
            };
            let offer_as = governed
                .get(&member.rollout_id)
                .map(|a| a.offer_as.clone())
                .unwrap_or_default();
            members.insert(
                member.rollout_id,
                Member {
                    member,
                    rollout,
                    offer_as,
                },
            );
        }
        Ok(members)
    }

    /// Records what the agent's message says about its place in each of its rollouts.
    /// A failure here loses one observation, which the next message repeats.
    pub(crate) async fn observe_members(&self, agent: &Agent, members: &Members) {
        let Some(store) = self.rollouts.as_ref() else {
            return;
        };
        for m in members.values() {
            let now = self.rollout_clock(&m.rollout).now();
            if let Some(next) = observe::observe(&m.member, &m.rollout, agent, &m.offer_as, now) {
                if next.phase != m.member.phase {
                    tracing::info!(rollout = m.rollout.id, agent = %agent.uid, from = %m.member.phase, to = %next.phase, failure = next.failure.as_deref(), "rollout agent moved");
                }
                if let Err(e) = store.observe_member(m.member.clone(), next).await {
                    tracing::warn!(rollout = m.rollout.id, agent = %agent.uid, error = %e, "an agent's rollout report was not recorded; its next message repeats it");
                }
            }
        }
    }

    /// Starts a rollout of `version` on assignment `assignment_id`, by `caller` (an admin).
    /// The assignment is pinned to the version it offers now (its stable version) until
    /// the rollout completes.
    pub async fn start_rollout(
        &self,
        assignment_id: i64,
        version: Version,
        plan: RolloutPlan,
        caller: &Caller,
    ) -> Result<Rollout, Error> {
        caller.require(Role::Admin)?;
        plan.check()?;
        let store = self.rollout_store()?;
        let assignment = self.assignment_for(assignment_id, caller).await?;
        let history = self.packages.history(&assignment.package).await?;
        let has = |v: &Version| {
            history
                .iter()
                .any(|b| b.version == *v && b.packages.iter().any(|p| p.is_active))
        };
        if !has(&version) {
            return Err(ValidationError::new(
                "version",
                format!(
                    "{} has no active build of version {version}: upload it first",
                    assignment.package
                ),
            )
            .into());
        }
        let from = match &assignment.version {
            VersionChoice::Exact(v) => Some(v.clone()),
            choice => history
                .iter()
                .filter(|b| b.version != version && has(&b.version))
                .filter(|b| !b.version.is_prerelease())
                .filter(|b| match choice {
                    VersionChoice::Matching(r) => r.matches(&b.version, false),
                    _ => true,
                })
                .map(|b| b.version.clone())
                .max_by(|a, b| a.precedence(b)),
        };
        if from.as_ref() == Some(&version) {
            return Err(ValidationError::new(
                "version",
                format!("assignment {assignment_id} already offers {version}"),
            )
            .into());
        }
        let pin = match (&assignment.version, &from) {
            (VersionChoice::Exact(_), _) | (_, None) => None,
            (_, Some(v)) => Some(v.to_string()),
        };
        let cause = format!(
            "created by {}: {} from {} to {version} in {} waves",
            caller.credential.username,
            assignment.package,
            from.as_ref()
                .map_or_else(|| "nothing".to_owned(), ToString::to_string),
            plan.waves.len()
        );
        let mut event = caller.event(AuditAction::RolloutCreate);
        event.package = Some(assignment.package.to_string());
        event.detail = format!(
            "{cause}; assignment {assignment_id}; plan {}",
            serde_json::to_string(&plan).unwrap_or_default()
        );
        let new = NewRollout {
            assignment_id,
            version,
            from_version: from,
            plan,
            state: RolloutState::Scheduled,
            cause,
            created_by: caller.credential.username.clone(),
        };
        let created = match store.create_rollout(new, pin, event).await {
            Ok(r) => r,
            Err(StoreError::Conflict) => {
                let moving = store
                    .rollouts_of(assignment_id)
                    .await?
                    .into_iter()
                    .find(|r| r.state.is_active())
                    .map_or_else(String::new, |r| format!(" (rollout {})", r.id));
                return Err(Error::RolloutConflict(format!(
                    "assignment {assignment_id} already has a rollout moving{moving}: abort it or wait for it to end"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(rollout = created.id, assignment = assignment_id, version = %created.version, "rollout created");
        self.offers_may_have_changed().await;
        // The first step at once, rather than at the next tick.
        if let Err(e) = self.evaluate(created.clone()).await {
            tracing::warn!(rollout = created.id, error = %e, "rollout not evaluated at once; the engine will");
        }
        self.rollout_for(assignment_id, created.id, caller).await
    }

    /// An assignment's rollouts, newest first.
    pub async fn rollouts(
        &self,
        assignment_id: i64,
        caller: &Caller,
    ) -> Result<Vec<Rollout>, Error> {
        caller.require(Role::Viewer)?;
        self.assignment_for(assignment_id, caller).await?;
        Ok(self.rollout_store()?.rollouts_of(assignment_id).await?)
    }

    async fn rollout_for(
        &self,
        assignment_id: i64,
        id: i64,
        caller: &Caller,
    ) -> Result<Rollout, Error> {
        caller.require(Role::Viewer)?;
        self.assignment_for(assignment_id, caller).await?;
        self.rollout_store()?
            .rollout(id)
            .await?
            .filter(|r| r.assignment_id == assignment_id)
            .ok_or(Error::NotFound(Entity::Rollout))
    }

    /// Where a rollout stands, wave by wave.
    pub async fn rollout_detail(
        &self,
        assignment_id: i64,
        id: i64,
        caller: &Caller,
    ) -> Result<RolloutDetail, Error> {
        let rollout = self.rollout_for(assignment_id, id, caller).await?;
        let store = self.rollout_store()?;
        let now = self.rollout_clock(&rollout).now();
        let (counts, _) = store
            .wave_counts(id, baked_before(&rollout, now), counted(&rollout))
            .await?;
        let transitions = store.transitions(id).await?;
        let waves = (0..rollout.plan.waves.len())
            .map(|i| {
                let baking = transitions
                    .iter()
                    .rev()
                    .find(|t| t.wave == i && t.state == RolloutState::Baking)
                    .map(|t| t.at);
                (counts.get(i).copied().unwrap_or_default(), baking)
            })
            .collect();
        let mut failures = store
            .rollout_members(id, Some(MemberPhase::Failed), 200)
            .await?;
        failures.extend(
            store
                .rollout_members(id, Some(MemberPhase::Retrying), 200)
                .await?,
        );
        failures.truncate(200);
        Ok(RolloutDetail {
            rollout,
            waves,
            transitions,
            failures,
            now,
        })
    }

    /// A step an admin takes, audited with `action`.
    #[allow(clippy::too_many_arguments)]
    async fn step_by(
        &self,
        rollout: &Rollout,
        caller: &Caller,
        action: AuditAction,
        state: RolloutState,
        cause: String,
        change: impl FnOnce(&mut RolloutStep),
    ) -> Result<Rollout, Error> {
        let assignment = self.assignment(rollout.assignment_id).await?;
        let mut event = caller.event(action);
        event.package = Some(assignment.package.to_string());
        event.detail = format!("{state} (wave {}): {cause}", rollout.wave + 1);
        let mut step = RolloutStep {
            rollout_id: rollout.id,
            expected_step: rollout.step,
            state,
            cause,
            wave: rollout.wave,
            wave_started: rollout.wave_started,
            approved_wave: rollout.approved_wave,
            at: self.rollout_clock(rollout).now(),
            actor: Some(caller.credential.username.clone()),
            new_members: Vec::new(),
            acknowledge_failures: false,
            revert_members: false,
            complete_assignment: None,
            event,
        };
        change(&mut step);
        let taken = self
            .rollout_store()?
            .step_rollout(step)
            .await?
            .ok_or_else(|| {
                Error::RolloutConflict(format!(
                    "rollout {} moved on meanwhile: read it again and retry",
                    rollout.id
                ))
            })?;
        tracing::info!(rollout = taken.id, state = %taken.state, wave = taken.wave + 1, cause = %taken.cause, by = %caller.credential.username, "rollout step");
        self.offers_may_have_changed().await;
        if let Err(e) = self.evaluate(taken.clone()).await {
            tracing::warn!(rollout = taken.id, error = %e, "rollout not evaluated at once; the engine will");
        }
        Ok(taken)
    }

    /// Approves the wave a rollout waits for, by `caller`, saying why.
    pub async fn approve_rollout(
        &self,
        assignment_id: i64,
        id: i64,
        reason: &str,
        caller: &Caller,
    ) -> Result<Rollout, Error> {
        caller.require(Role::Admin)?;
        let r = self.rollout_for(assignment_id, id, caller).await?;
        if r.state != RolloutState::WaitingForApproval {
            return Err(Error::RolloutConflict(format!(
                "rollout {id} is {}, not waiting for approval",
                r.state
            )));
        }
        let wave = r.wave;
        let cause = format!(
            "wave {} approved by {}: {}",
            wave + 1,
            caller.credential.username,
            words(reason)
        );
        self.step_by(
            &r,
            caller,
            AuditAction::RolloutApprove,
            r.state,
            cause,
            |s| {
                s.approved_wave = Some(wave);
            },
        )
        .await?;
        self.rollout_for(assignment_id, id, caller).await
    }

    /// Pauses a rollout: no agent is newly offered its version until it is resumed.
    pub async fn pause_rollout(
        &self,
        assignment_id: i64,
        id: i64,
        reason: &str,
        caller: &Caller,
    ) -> Result<Rollout, Error> {
        caller.require(Role::Admin)?;
        let r = self.rollout_for(assignment_id, id, caller).await?;
        if !r.state.is_active() || matches!(r.state, RolloutState::Paused | RolloutState::Reverting)
        {
            return Err(Error::RolloutConflict(format!(
                "rollout {id} is {}: only a moving rollout pauses",
                r.state
            )));
        }
        let cause = format!(
            "paused by {}: {}",
            caller.credential.username,
            words(reason)
        );
        self.step_by(
            &r,
            caller,
            AuditAction::RolloutPause,
            RolloutState::Paused,
            cause,
            |_| {},
        )
        .await
    }

    /// Resumes a paused rollout in the same wave; the failures seen so far are
    /// acknowledged and do not trip it again.
    pub async fn resume_rollout(
        &self,
        assignment_id: i64,
        id: i64,
        reason: &str,
        caller: &Caller,
    ) -> Result<Rollout, Error> {
        caller.require(Role::Admin)?;
        let r = self.rollout_for(assignment_id, id, caller).await?;
        if r.state != RolloutState::Paused {
            return Err(Error::RolloutConflict(format!(
                "rollout {id} is {}, not paused",
                r.state
            )));
        }
        let now = self.rollout_clock(&r).now();
        let state = if r.wave_started {
            RolloutState::Rolling
        } else if r.wave == 0 && r.plan.start_at.is_some_and(|t| t > now) {
            RolloutState::Scheduled
        } else {
            RolloutState::WaitingForWindow
        };
        let cause = format!(
            "resumed by {} in wave {}, failures so far acknowledged: {}",
            caller.credential.username,
            r.wave + 1,
            words(reason)
        );
        self.step_by(&r, caller, AuditAction::RolloutResume, state, cause, |s| {
            s.acknowledge_failures = true;
        })
        .await?;
        self.rollout_for(assignment_id, id, caller).await
    }

    /// Stops a rollout for good; with `revert`, every agent it moved is offered the
    /// version it reported before (and the rollout ends `reverted`), otherwise they keep
    /// what they have (`aborted`).
    pub async fn abort_rollout(
        &self,
        assignment_id: i64,
        id: i64,
        revert: bool,
        reason: &str,
        caller: &Caller,
    ) -> Result<Rollout, Error> {
        caller.require(Role::Admin)?;
        let r = self.rollout_for(assignment_id, id, caller).await?;
        if !r.state.is_active() || (revert && r.state == RolloutState::Reverting) {
            return Err(Error::RolloutConflict(format!(
                "rollout {id} is {}: there is nothing to abort",
                r.state
            )));
        }
        let by = &caller.credential.username;
        let (state, cause) = if revert {
            (
                RolloutState::Reverting,
                format!(
                    "aborted by {by}, reverting every agent it moved: {}",
                    words(reason)
                ),
            )
        } else {
            (
                RolloutState::Aborted,
                format!(
                    "aborted by {by}; its agents keep what they have: {}",
                    words(reason)
                ),
            )
        };
        self.step_by(&r, caller, AuditAction::RolloutAbort, state, cause, |s| {
            s.revert_members = revert;
        })
        .await?;
        self.rollout_for(assignment_id, id, caller).await
    }

    /// Refuses a change of an assignment's version by hand while a rollout moves it.
    pub(crate) async fn check_no_rollout_moving(
        &self,
        assignment: &Assignment,
    ) -> Result<(), Error> {
        let (Some(id), Some(store)) = (assignment.rollout_id, self.rollouts.as_ref()) else {
            return Ok(());
        };
        if store
            .rollout(id)
            .await?
            .is_some_and(|r| r.state.is_active())
        {
            return Err(Error::RolloutConflict(format!(
                "rollout {id} moves assignment {}'s version: abort it first",
                assignment.id
            )));
        }
        Ok(())
    }
}

fn words(reason: &str) -> String {
    let reason = reason.trim();
    if reason.is_empty() {
        "no reason given".to_owned()
    } else {
        reason.chars().take(500).collect()
    }
}

/// Agents healthy since this time or earlier have baked.
pub(crate) fn baked_before(r: &Rollout, now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::seconds(
        i64::try_from(r.plan.success.healthy_for_secs).unwrap_or(i64::MAX / 4),
    )
}

/// The failure kinds the plan counts.
pub(crate) fn counted(r: &Rollout) -> Vec<&'static str> {
    r.plan.failure.count.iter().map(|k| k.code()).collect()
}
