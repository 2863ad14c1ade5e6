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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use agentpkg_model::{
    AgentUid, AuditAction, NewAuditEvent, OnFailure, Rollout, RolloutState, WaveCounts,
};
use agentpkg_packagemgr::Error;
use agentpkg_store::RolloutStep;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{baked_before, counted};
use crate::agents::Fleet;
use crate::offers::{platform_of, selects};

/// How often the engine evaluates rollouts, unless told otherwise.
pub const DEFAULT_ROLLOUT_TICK: Duration = Duration::from_secs(5);

/// Agents a wave newly offers per step, unless told otherwise: a wave of 5 000 starts over
/// forty ticks, each a short transaction, rather than in one long one (at 10 000 agents on
/// two cores a step of 250 still made ticks of 85 ms; 125 keeps them under 50 ms).
pub const DEFAULT_WAVE_STEP_AGENTS: usize = 125;

/// What this replica knows of started waves between ticks: the agents each has yet to
/// offer, in its order, and which waves it has checked for such agents since it took the
/// engine's lease. Forgotten with the lease: another replica, or this one after a
/// restart, works the rest out again from the database.
#[derive(Default)]
pub(crate) struct Backlogs {
    /// Rollout → (wave, agents still to offer with the version each reported).
    rest: HashMap<i64, (usize, Vec<(AgentUid, String)>)>,
    checked: HashSet<(i64, usize)>,
    /// Rollout → the agents read so far for a wave about to start.
    gathering: HashMap<i64, Gathering>,
}

/// Agents read per tick while a wave's members are chosen, per agent offered per step: at
/// the default step a fleet of 10 000 is read over eight ticks rather than in one long one.
const READ_PER_STEP: usize = 10;

/// A wave's candidates read so far: the assignment, the platforms the version has builds
/// for, the last uid read, and the selected agents with their order keys.
pub(crate) struct Gathering {
    wave: usize,
    assignment: agentpkg_model::Assignment,
    builds: HashSet<(agentpkg_model::Platform, agentpkg_model::Arch)>,
    after: Option<String>,
    pool: Vec<([u8; 32], AgentUid, String)>,
}

/// Where choosing a wave's agents stands after a tick.
pub(crate) enum Gathered {
    /// More agents to read next tick; the rows read this one.
    Pending(u64),
    /// The wave's new agents in order, the number selected, and the rows read.
    Ready {
        members: Vec<(AgentUid, String)>,
        population: u64,
        rows: u64,
    },
}

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

    /// Forgets what this replica knew of started waves (at a change of the lease).
    fn forget_backlogs(&self) {
        *self
            .wave_backlogs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Backlogs::default();
    }

    /// Keeps the first step's worth of `members` and the rest for the next ticks; how
    /// many are left for them.
    fn keep_backlog(&self, id: i64, wave: usize, members: &mut Vec<(AgentUid, String)>) -> usize {
        let step = match self.wave_step {
            0 => usize::MAX,
            n => n,
        };
        let rest = if members.len() > step {
            members.split_off(step)
        } else {
            Vec::new()
        };
        let left = rest.len();
        let mut backlogs = self
            .wave_backlogs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        backlogs.checked.insert((id, wave));
        if rest.is_empty() {
            backlogs.rest.remove(&id);
        } else {
            backlogs.rest.insert(id, (wave, rest));
        }
        left
    }

    /// Offers the next step's worth of a started wave's agents, if it has any left; the
    /// rows read, or `None` when the wave is whole (then it may be promoted). The first
    /// time this replica sees a wave it did not start, the wave is chosen again from the
    /// database, which finds the agents a step of another replica left.
    async fn continue_wave(&self, r: &Rollout, now: DateTime<Utc>) -> Result<Option<u64>, Error> {
        let (known, checked) = {
            let mut backlogs = self
                .wave_backlogs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let known = match backlogs.rest.remove(&r.id) {
                Some((wave, rest)) if wave == r.wave => Some(rest),
                _ => None,
            };
            (known, backlogs.checked.contains(&(r.id, r.wave)))
        };
        let (mut members, rows) = match known {
            Some(rest) => (rest, 0),
            None if checked => return Ok(None),
            None => match self.choose_wave(r, r.wave).await? {
                Gathered::Ready { members, rows, .. } => (members, rows),
                // Not promoted while the wave's agents are still being read.
                Gathered::Pending(rows) => return Ok(Some(rows)),
            },
        };
        if members.is_empty() {
            self.keep_backlog(r.id, r.wave, &mut members);
            return Ok(None);
        }
        let rest = self.keep_backlog(r.id, r.wave, &mut members);
        let cause = format!(
            "wave {} of {}: {} more newly offered {}{}",
            r.wave + 1,
            r.plan.waves.len(),
            members.len(),
            r.version,
            if rest > 0 {
                format!("; {rest} more over the next ticks")
            } else {
                "; every agent of the wave is offered it now".to_owned()
            }
        );
        self.step(r, RolloutState::Rolling, cause, now, |s| {
            s.new_members = members;
        })
        .await?;
        Ok(Some(rows))
    }

    /// The agents wave `n` adds: the assignment's agents that have a build of the version
    /// for their platform, in an order fixed by a hash of their uid and the rollout, up to
    /// the wave's size — so each wave holds every earlier one. The agents are read ten
    /// times the wave step per tick (kept in this replica's memory in between), so that no
    /// tick reads the whole fleet; until the last page, [`Gathered::Pending`].
    async fn choose_wave(&self, r: &Rollout, n: usize) -> Result<Gathered, Error> {
        let store = self.rollout_store()?;
        let known = self
            .wave_backlogs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .gathering
            .remove(&r.id)
            .filter(|g| g.wave == n);
        let mut g = match known {
            Some(g) => g,
            None => {
                let assignment = self.assignment(r.assignment_id).await?;
                let builds: HashSet<_> = self
                    .packages
                    .history(&assignment.package)
                    .await?
                    .into_iter()
                    .filter(|b| b.version == r.version)
                    .flat_map(|b| b.packages)
                    .filter(|p| p.is_active)
                    .map(|p| (p.platform, p.arch))
                    .collect();
                Gathering {
                    wave: n,
                    assignment,
                    builds,
                    after: None,
                    pool: Vec::new(),
                }
            }
        };
        let per_page = match self.wave_step {
            0 => usize::MAX,
            n => n.saturating_mul(READ_PER_STEP),
        };
        let page = store
            .candidates(g.assignment.offer_as.clone(), g.after.clone(), per_page)
            .await?;
        let rows = page.len() as u64;
        let whole = page.len() < per_page;
        g.after = page.last().map(|c| c.0.clone());
        for (uid, identifying, non_identifying, has) in page {
            let mut attributes: BTreeMap<String, String> =
                serde_json::from_str(&non_identifying).unwrap_or_default();
            attributes.extend(
                serde_json::from_str::<BTreeMap<String, String>>(&identifying).unwrap_or_default(),
            );
            if !selects(&g.assignment, &attributes)
                || !platform_of(&attributes).is_ok_and(|p| g.builds.contains(&p))
            {
                continue;
            }
            let Ok(uid) = AgentUid::parse(&uid) else {
                continue;
            };
            let mut h = Sha256::new();
            h.update(b"agentpkg rollout wave v1\0");
            h.update(uid.as_bytes());
            h.update(r.id.to_be_bytes());
            let key: [u8; 32] = h.finalize().into();
            let previous = has.unwrap_or_default().trim_start_matches('v').to_owned();
            g.pool.push((key, uid, previous));
        }
        if !whole {
            self.wave_backlogs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .gathering
                .insert(r.id, g);
            return Ok(Gathered::Pending(rows));
        }
        let mut pool = g.pool;
        pool.sort_unstable_by_key(|p| p.0);
        let population = pool.len() as u64;
        let size = r.plan.waves[n].of(population);
        let existing: HashSet<String> = store.member_uids(r.id).await?.into_iter().collect();
        let mut covered = pool
            .iter()
            .filter(|(_, uid, _)| existing.contains(&uid.to_string()))
            .count() as u64;
        let mut members = Vec::new();
        for (_, uid, previous) in pool {
            if covered >= size {
                break;
            }
            if !existing.contains(&uid.to_string()) {
                members.push((uid, previous));
                covered += 1;
            }
        }
        Ok(Gathered::Ready {
            members,
            population,
            rows: rows + existing.len() as u64,
        })
    }

    /// Takes one step of the engine's own (audited as `rollout_step`), unless another
    /// replica took it first.
    async fn step(
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
                let mut backlogs = self
                    .wave_backlogs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                backlogs.rest.remove(&r.id);
                backlogs.gathering.remove(&r.id);
                backlogs.checked.retain(|(id, _)| *id != r.id);
            }
        }
        Ok(())
    }
}
