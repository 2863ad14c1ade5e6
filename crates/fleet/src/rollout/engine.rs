//! The rollout engine: every tick, on the one replica that holds its lease, each moving
//! rollout is judged from its agents' counts (two grouped reads, whatever the number of
//! agents) and takes at most one step:
//!
//! ```text
//! scheduled ─▶ waiting_for_approval ─▶ waiting_for_window ─▶ rolling(n) ─▶ baking(n) ─┐
//!     ▲               (each gate only where the plan asks)                              │
//!     └────────────── wave n done: the next wave passes the same gates ◀───────────────┘
//! baking(last) ─▶ completed         past a failure threshold ─▶ paused | reverting ─▶ reverted
//! ```
//!
//! No tick reads or writes the whole fleet: before a wave starts its candidates are read a
//! page per tick, and once it started its agents are offered a step per tick (rolling
//! stays rolling until all of them are).

use std::time::{Duration, Instant};

use agentpkg_model::{AuditAction, NewAuditEvent, OnFailure, Rollout, RolloutState, WaveCounts};
use agentpkg_packagemgr::Error;
use agentpkg_store::RolloutStep;
use chrono::{DateTime, Utc};

use super::waves::Gathered;
use super::{baked_before, counted};
use crate::agents::Fleet;

/// How often the engine evaluates rollouts, unless told otherwise.
pub const DEFAULT_ROLLOUT_TICK: Duration = Duration::from_secs(5);

const LEASE: &str = "rollout-engine";

/// Told each tick's duration and the database rows it read (the server's metrics).
pub type TickObserver = std::sync::Arc<dyn Fn(Duration, u64) + Send + Sync>;

impl Fleet {
    /// One tick: every moving rollout judged once, each taking at most one step.
    pub async fn evaluate_rollouts(&self) -> Result<(), Error> {
        let started = Instant::now();
        let active = self.rollout_store()?.active_rollouts().await?;
        let mut rows = active.len() as u64;
        for r in active {
            let (id, state, wave) = (r.id, r.state, r.wave + 1);
            let one = Instant::now();
            match self.evaluate(r).await {
                Ok(n) => {
                    rows += n;
                    tracing::debug!(rollout = id, %state, wave, rows = n, took_ms = one.elapsed().as_secs_f64() * 1000.0, "rollout evaluated");
                }
                Err(e) => {
                    tracing::warn!(rollout = id, error = %e, "rollout not evaluated; the next tick tries again")
                }
            }
        }
        if let Some(observe) = &self.tick_observer {
            observe(started.elapsed(), rows);
        }
        Ok(())
    }

    /// Evaluates every `every` while this replica holds the engine's lease (taken again
    /// by another replica within three ticks of this one's loss), until aborted.
    pub fn spawn_rollout_engine(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            let every = every.max(Duration::from_millis(50));
            let lease = (every * 3).max(Duration::from_secs(2));
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let Some(store) = fleet.rollouts.clone() else {
                return;
            };
            let mut held = false;
            loop {
                ticks.tick().await;
                let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
                match store
                    .take_lease(LEASE, fleet.replica.to_string(), until)
                    .await
                {
                    Ok(true) => {
                        if !held {
                            tracing::info!(replica = %fleet.replica, "this replica evaluates rollouts");
                            fleet.forget_backlogs();
                            held = true;
                        }
                        if let Err(e) = fleet.evaluate_rollouts().await {
                            tracing::warn!(error = %e, "rollouts not evaluated; the next tick tries again");
                        }
                    }
                    Ok(false) => {
                        if held {
                            fleet.forget_backlogs();
                        }
                        held = false;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the rollout engine's lease was not taken")
                    }
                }
            }
        })
    }

    /// Gives the engine's lease up, so another replica takes it at once (at shutdown).
    pub async fn release_rollout_lease(&self) {
        if let Some(store) = &self.rollouts
            && let Err(e) = store.drop_lease(LEASE, self.replica.to_string()).await
        {
            tracing::warn!(error = %e, "the rollout engine's lease was not released; it expires on its own");
        }
    }

    /// Judges one rollout and takes its next step, if any; the rows it read.
    pub(crate) async fn evaluate(&self, r: Rollout) -> Result<u64, Error> {
        let now = self.rollout_clock(&r).now();
        match r.state {
            RolloutState::Completed
            | RolloutState::Reverted
            | RolloutState::Aborted
            | RolloutState::Paused => Ok(0),
            RolloutState::Scheduled => {
                if r.plan.start_at.is_none_or(|t| t <= now) {
                    self.gate(&r, r.wave, now, String::new()).await
                } else {
                    Ok(0)
                }
            }
            RolloutState::WaitingForApproval | RolloutState::WaitingForWindow => {
                let (counts, rows) = self.counts(&r, now).await?;
                // Agents of earlier waves may still fail while the next one waits.
                if r.wave > 0 && self.judge_failures(&r, &counts, r.wave - 1, now).await? {
                    return Ok(rows);
                }
                Ok(rows + self.gate(&r, r.wave, now, String::new()).await?)
            }
            RolloutState::Reverting => {
                let (counts, rows) = self.counts(&r, now).await?;
                let mut all = WaveCounts::default();
                counts.iter().for_each(|c| all.add(c));
                if all.reverting == 0 {
                    let cause = format!(
                        "every agent it moved ({}) runs its previous version again, healthy",
                        all.reverted
                    );
                    self.step(&r, RolloutState::Reverted, cause, now, |_| {})
                        .await?;
                }
                Ok(rows)
            }
            RolloutState::Rolling | RolloutState::Baking => self.judge(&r, now).await,
        }
    }

    async fn counts(
        &self,
        r: &Rollout,
        now: DateTime<Utc>,
    ) -> Result<(Vec<WaveCounts>, u64), Error> {
        Ok(self
            .rollout_store()?
            .wave_counts(r.id, baked_before(r, now), counted(r))
            .await?)
    }

    /// Pauses or reverts the rollout when its agents up to wave `upto` pass a failure
    /// threshold; whether they did.
    async fn judge_failures(
        &self,
        r: &Rollout,
        counts: &[WaveCounts],
        upto: usize,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let wave = counts.get(upto).copied().unwrap_or_default();
        let mut all = WaveCounts::default();
        counts.iter().take(upto + 1).for_each(|c| all.add(c));
        let Some(why) = r.plan.failure.tripped(upto, &wave, &all) else {
            return Ok(false);
        };
        match r.plan.on_failure {
            OnFailure::Pause => {
                let cause = format!("paused automatically: {why}");
                self.step(r, RolloutState::Paused, cause, now, |_| {})
                    .await?;
            }
            OnFailure::Revert => {
                let cause = format!("reverting automatically: {why}");
                self.step(r, RolloutState::Reverting, cause, now, |s| {
                    s.revert_members = true;
                })
                .await?;
            }
        }
        Ok(true)
    }

    /// A rolling or baking wave: retries due, silent agents, thresholds, then promotion.
    async fn judge(&self, r: &Rollout, now: DateTime<Utc>) -> Result<u64, Error> {
        let store = self.rollout_store()?;
        let retried = store.retry_due(r.id, now).await?;
        if retried > 0 {
            tracing::info!(
                rollout = r.id,
                agents = retried,
                "failed installs offered again"
            );
            self.offers_may_have_changed().await;
        }
        if let Some(secs) = r.plan.failure.no_report_within() {
            let before =
                now - chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 4));
            let message = format!(
                "no report of {} installed and healthy within {secs} s",
                r.version
            );
            let silent = store.mark_silent(r.id, before, now, message).await?;
            if silent > 0 {
                tracing::warn!(
                    rollout = r.id,
                    agents = silent,
                    "rollout agents went silent"
                );
            }
        }
        let (counts, rows) = self.counts(r, now).await?;
        if self.judge_failures(r, &counts, r.wave, now).await? {
            return Ok(rows);
        }
        if r.state == RolloutState::Rolling
            && let Some(more) = self.continue_wave(r, now).await?
        {
            return Ok(rows + more);
        }
        let wave = counts.get(r.wave).copied().unwrap_or_default();
        let need = r.plan.needed(wave.members);
        let n = r.wave + 1;
        if r.state == RolloutState::Rolling && wave.installed + wave.healthy >= need {
            let cause = format!(
                "{} of {} agents in wave {n} run {} ({need} needed); baking for {} s",
                wave.installed + wave.healthy,
                wave.members,
                r.version,
                r.plan.success.healthy_for_secs
            );
            self.step(r, RolloutState::Baking, cause, now, |_| {})
                .await?;
        } else if r.state == RolloutState::Baking && wave.baked >= need {
            let done = format!(
                "wave {n} done: {} of {} agents healthy on {} for {} s ({need} needed)",
                wave.baked, wave.members, r.version, r.plan.success.healthy_for_secs
            );
            if n == r.plan.waves.len() {
                let assignment = (r.assignment_id, r.version.clone());
                let cause = format!(
                    "{done}; the assignment now offers {} to every agent",
                    r.version
                );
                self.step(r, RolloutState::Completed, cause, now, |s| {
                    s.complete_assignment = Some(assignment);
                })
                .await?;
            } else {
                return Ok(rows + self.gate(r, n, now, format!("{done}; ")).await?);
            }
        }
        Ok(rows)
    }

    /// Wave `n` passes its gates — approval, then the window — or waits at the first
    /// closed one; `done` says why the previous wave ended.
    async fn gate(
        &self,
        r: &Rollout,
        n: usize,
        now: DateTime<Utc>,
        done: String,
    ) -> Result<u64, Error> {
        let waves = r.plan.waves.len();
        if r.plan.needs_approval(n) && r.approved_wave.is_none_or(|a| a < n) {
            if r.state != RolloutState::WaitingForApproval || r.wave != n {
                let cause = format!(
                    "{done}wave {} of {waves} waits for an admin's approval",
                    n + 1
                );
                self.step(r, RolloutState::WaitingForApproval, cause, now, |s| {
                    s.wave = n;
                    s.wave_started = false;
                })
                .await?;
            }
            return Ok(0);
        }
        if let Some(window) = &r.plan.window {
            match window.open_at(now) {
                Ok(Ok(())) => {}
                Ok(Err(next)) => {
                    if r.state != RolloutState::WaitingForWindow || r.wave != n {
                        let opens =
                            next.map_or_else(|| "never again".to_owned(), |t| t.to_rfc3339());
                        let cause = format!(
                            "{done}wave {} of {waves} waits for the maintenance window ({} in {}), which opens at {opens}",
                            n + 1,
                            window.cron,
                            window.timezone
                        );
                        self.step(r, RolloutState::WaitingForWindow, cause, now, |s| {
                            s.wave = n;
                            s.wave_started = false;
                        })
                        .await?;
                    }
                    return Ok(0);
                }
                Err(e) => {
                    tracing::warn!(rollout = r.id, error = %e, "a stored window does not parse; treated as open")
                }
            }
        }
        let (mut members, population, rows) = match self.choose_wave(r, n).await? {
            Gathered::Ready {
                members,
                population,
                rows,
            } => (members, population, rows),
            // The wave starts once its agents are all read, in a later tick.
            Gathered::Pending(rows) => return Ok(rows),
        };
        let rest = self.keep_backlog(r.id, n, &mut members);
        let later = if rest > 0 {
            format!("; {rest} more over the next ticks")
        } else {
            String::new()
        };
        let cause = format!(
            "{done}wave {} of {waves} started: {} newly offered {} ({} of {population} agents selected){later}",
            n + 1,
            members.len(),
            r.version,
            r.plan.waves[n].of(population)
        );
        self.step(r, RolloutState::Rolling, cause, now, |s| {
            s.wave = n;
            s.wave_started = true;
            s.new_members = members;
        })
        .await?;
        Ok(rows)
    }

    /// Takes one step of the engine's own (audited as `rollout_step`), unless another
    /// replica took it first.
    pub(super) async fn step(
        &self,
        r: &Rollout,
        state: RolloutState,
        cause: String,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut RolloutStep),
    ) -> Result<(), Error> {
        let assignment = self.assignment(r.assignment_id).await?;
        let mut event = NewAuditEvent::new(AuditAction::RolloutStep);
        event.package = Some(assignment.package.to_string());
        let mut step = RolloutStep {
            rollout_id: r.id,
            expected_step: r.step,
            state,
            cause: cause.clone(),
            wave: r.wave,
            wave_started: r.wave_started,
            approved_wave: r.approved_wave,
            at: now,
            actor: None,
            new_members: Vec::new(),
            acknowledge_failures: false,
            revert_members: false,
            complete_assignment: None,
            event,
        };
        change(&mut step);
        step.event.detail = format!("{state} (wave {}): {cause}", step.wave + 1);
        let wave = step.wave + 1;
        let offered = step.new_members.len();
        match self.rollout_store()?.step_rollout(step).await? {
            Some(taken) => {
                if matches!(state, RolloutState::Paused | RolloutState::Reverting) {
                    tracing::warn!(rollout = r.id, assignment = r.assignment_id, %state, wave, %cause, "rollout step");
                } else {
                    tracing::info!(rollout = r.id, assignment = r.assignment_id, %state, wave, offered, %cause, "rollout step");
                }
                if taken.state != r.state || offered > 0 {
                    self.offers_may_have_changed().await;
                }
            }
            None => {
                tracing::debug!(rollout = r.id, "another replica took this step");
                self.wave_backlogs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .forget_rollout(r.id);
            }
        }
        Ok(())
    }
}
