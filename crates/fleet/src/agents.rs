//! Answering an agent's message, and keeping what it says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use agentpkg_model::{
    Agent, AgentFilter, AgentUid, Assignment, AssignmentPatch, AuditAction, Entity, InstallStatus,
    NewAssignment, NewAuditEvent, Page, PageRequest, Role,
};
use agentpkg_packagemgr::{AuditLog, Caller, Error, PackageManager};
use agentpkg_store::DynFleetStore;
use chrono::{DateTime, Utc};

use crate::limits::FleetLimits;
use crate::offers::DownloadCredentials;
use crate::proto::ServerCapabilities;

/// Largest `AgentToServer` message accepted, in bytes, unless told otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// What this server does for agents: it accepts their status and package statuses, and
/// offers packages.
pub const SERVER_CAPABILITIES: u64 = ServerCapabilities::AcceptsStatus as u64
    | ServerCapabilities::OffersPackages as u64
    | ServerCapabilities::AcceptsPackagesStatus as u64;

/// The agents of the fleet and what they are offered. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    pub(crate) store: DynFleetStore,
    pub(crate) packages: PackageManager,
    pub(crate) credentials: Arc<dyn DownloadCredentials>,
    pub(crate) audit: AuditLog,
    pub(crate) limits: FleetLimits,
    min_sample: u64,
    /// Signals this replica's WebSocket connections that offers may have changed
    /// ([`crate::push`]).
    pub(crate) changes: Arc<tokio::sync::watch::Sender<Option<Arc<Vec<Assignment>>>>>,
    /// Heartbeats that changed nothing but the sequence number and the time: kept here
    /// and written in batches ([`Fleet::spawn_flusher`]), so that a quiet agent costs no
    /// database write per message.
    pub(crate) seen: Arc<Mutex<Seen>>,
    pub(crate) last_seen_precision: chrono::Duration,
    /// Progressive rollouts ([`crate::rollout`]), when the fleet has them.
    pub(crate) rollouts: Option<agentpkg_store::DynRolloutStore>,
    /// How much faster than the wall clock rollouts run (1: not at all).
    pub(crate) rollout_scale: u32,
    /// This replica's name, for the rollout engine's lease.
    pub(crate) replica: Arc<str>,
    pub(crate) rollout_cache: Arc<Mutex<HashMap<i64, Arc<agentpkg_model::Rollout>>>>,
    pub(crate) tick_observer: Option<crate::rollout::TickObserver>,
    /// Agents a wave newly offers per step (0: the whole wave in one).
    pub(crate) wave_step: usize,
    pub(crate) wave_backlogs: Arc<Mutex<crate::rollout::Backlogs>>,
}

/// Per agent: the last quiet heartbeat's sequence number and time, and the last-seen time
/// its row holds.
type Seen = HashMap<AgentUid, (u64, DateTime<Utc>, DateTime<Utc>)>;

/// How stale a row's last-seen time may get before a quiet heartbeat is written, unless
/// told otherwise.
pub const DEFAULT_LAST_SEEN_PRECISION: std::time::Duration = std::time::Duration::from_secs(300);

/// Agents a failure ratio is judged on, at the least, unless told otherwise.
pub const DEFAULT_MIN_SAMPLE: u64 = 5;

/// Where a rollout stands: agents by offered version and status, and the failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStatus {
    pub assignment: Assignment,
    /// (offered version, status) → agents.
    pub counts: std::collections::BTreeMap<(String, InstallStatus), u64>,
    /// (agent uid, offered version, error message) of each failed install.
    pub failures: Vec<(String, String, String)>,
}

impl Fleet {
    /// A fleet kept in `store`, offering `packages`' builds, with download headers from
    /// `credentials`, recording its decisions in `audit`.
    pub fn new(
        store: DynFleetStore,
        packages: PackageManager,
        credentials: Arc<dyn DownloadCredentials>,
        audit: AuditLog,
    ) -> Self {
        Self {
            store,
            packages,
            credentials,
            audit,
            limits: FleetLimits::default(),
            min_sample: DEFAULT_MIN_SAMPLE,
            changes: Arc::new(tokio::sync::watch::Sender::new(None)),
            seen: Arc::default(),
            last_seen_precision: chrono::Duration::seconds(300),
            rollouts: None,
            rollout_scale: 1,
            replica: format!(
                "{:x}-{:x}",
                std::process::id(),
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            )
            .into(),
            rollout_cache: Arc::default(),
            tick_observer: None,
            wave_step: crate::rollout::DEFAULT_WAVE_STEP_AGENTS,
            wave_backlogs: Arc::default(),
        }
    }

    /// The same fleet with progressive rollouts kept in `store`, on a clock `scale` times
    /// as fast as the wall clock (1 in production; more for tests and demonstrations).
    pub fn with_rollouts(mut self, store: agentpkg_store::DynRolloutStore, scale: u32) -> Self {
        self.rollouts = Some(store);
        self.rollout_scale = scale.max(1);
        self
    }

    /// The same fleet offering a wave's agents `agents` per step of the rollout engine (0:
    /// a whole wave in one step).
    pub fn with_wave_step(mut self, agents: usize) -> Self {
        self.wave_step = agents;
        self
    }

    /// The same fleet telling `observer` what each rollout engine tick cost.
    pub fn with_tick_observer(mut self, observer: crate::rollout::TickObserver) -> Self {
        self.tick_observer = Some(observer);
        self
    }

    /// The same fleet writing a quiet agent's last-seen time only once the stored one is
    /// `precision` old (quiet heartbeats write nothing in between).
    pub fn with_last_seen_precision(mut self, precision: std::time::Duration) -> Self {
        self.last_seen_precision =
            chrono::Duration::from_std(precision).unwrap_or(chrono::Duration::seconds(300));
        self
    }

    /// The same fleet within `limits`.
    pub fn with_limits(mut self, limits: FleetLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same fleet judging failure ratios on at least `agents` agents.
    pub fn with_rollout_min_sample(mut self, agents: u64) -> Self {
        self.min_sample = agents.max(1);
        self
    }

    /// Records that an agent's connection ended without its disconnect message (the
    /// WebSocket transport sees that); an unknown or malformed uid is ignored.
    pub async fn connection_lost(&self, uid: &[u8]) {
        let Ok(uid) = AgentUid::from_bytes(uid) else {
            return;
        };
        let recorded = async {
            let Some(mut agent) = self.store.agent(&uid).await? else {
                return Ok::<_, Error>(());
            };
            let now = Utc::now();
            agent.connected = false;
            agent.disconnects += 1;
            agent.disconnected_at = Some(now);
            self.take_seen_into(&mut agent);
            self.store.save_agent(agent, false).await?;
            tracing::info!(agent = %uid, "agent connection lost");
            Ok(())
        };
        if let Err(e) = recorded.await {
            tracing::warn!(agent = %uid, error = %e, "a lost connection was not recorded");
        }
    }

    /// Moves what this replica heard of the agent and did not write yet into `agent`,
    /// which the caller is about to save.
    pub(crate) fn take_seen_into(&self, agent: &mut Agent) {
        let heard = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&agent.uid);
        if let Some((seq, at, _)) = heard
            && seq >= agent.sequence_num
        {
            agent.sequence_num = seq;
            agent.last_seen = at;
        }
    }

    pub(crate) fn seen_of(&self, uid: &AgentUid) -> Option<(u64, DateTime<Utc>, DateTime<Utc>)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .copied()
    }

    /// Writes the quiet heartbeats whose agent's stored last-seen time is older than the
    /// precision; the others stay in memory (this replica keeps using them).
    pub async fn flush_seen(&self) -> Result<usize, Error> {
        let due: Vec<_> = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let mut due = Vec::new();
            for (uid, (seq, at, stored)) in seen.iter_mut() {
                if *at - *stored >= self.last_seen_precision {
                    due.push((*uid, *seq, *at));
                    *stored = *at;
                }
            }
            due
        };
        let n = due.len();
        if n > 0 {
            // A failed write loses only last-seen times, which later heartbeats renew.
            self.store.touch_agents(due).await?;
        }
        Ok(n)
    }

    /// Writes every quiet heartbeat not written yet (at shutdown).
    pub async fn flush_all_seen(&self) -> Result<usize, Error> {
        let all: Vec<_> =
            std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .map(|(uid, (seq, at, _))| (uid, seq, at))
                .collect();
        let n = all.len();
        if n > 0 {
            self.store.touch_agents(all).await?;
        }
        Ok(n)
    }

    /// Flushes the heartbeats every `every` until the task is aborted.
    pub fn spawn_flusher(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = fleet.flush_seen().await {
                    tracing::warn!(error = %e, "agents' last-seen times not written; the next heartbeats renew them");
                }
            }
        })
    }

    /// Pauses each rolling-out assignment whose share of failed installs, among the agents
    /// offered its version, is past its ratio (once enough agents were offered it).
    pub(crate) async fn guard(
        &self,
        sources: &std::collections::BTreeMap<String, (i64, String)>,
    ) -> Result<(), Error> {
        for (name, (id, version)) in sources {
            let Some(assignment) = self.store.assignment(*id).await? else {
                continue;
            };
            // A progressive rollout judges its own agents (crate::rollout).
            if assignment.paused.is_some() || assignment.rollout_id.is_some() {
                continue;
            }
            let (offered, failed) = self.store.offer_outcomes(name, version).await?;
            if offered < self.min_sample {
                continue;
            }
            let ratio = failed as f64 / offered as f64;
            if ratio > assignment.max_failure_ratio {
                let why = format!(
                    "paused automatically: {failed} of {offered} agents offered {version} failed to install it ({:.0} % > {:.0} %)",
                    ratio * 100.0,
                    assignment.max_failure_ratio * 100.0
                );
                tracing::warn!(assignment = id, %why, "rollout paused");
                let mut event = NewAuditEvent::new(AuditAction::RolloutPause);
                event.package = Some(assignment.package.to_string());
                event.subject = Some(format!("assignment {id}"));
                event.detail = format!(
                    "{why}; failed {failed}, sample {offered}, ratio {ratio:.3}, limit {}",
                    assignment.max_failure_ratio
                );
                self.audit.record(event).await;
                self.store
                    .update_assignment(
                        *id,
                        AssignmentPatch {
                            paused: Some(Some(why)),
                            ..AssignmentPatch::default()
                        },
                    )
                    .await?;
                self.offers_may_have_changed().await;
            }
        }
        Ok(())
    }

    /// Where an assignment's rollout stands.
    pub async fn rollout_status(&self, id: i64) -> Result<RolloutStatus, Error> {
        let assignment = self.assignment(id).await?;
        // Only statuses of this package's versions (other assignments may offer other
        // packages under the same name).
        let versions: std::collections::HashSet<String> = self
            .packages
            .history(&assignment.package)
            .await?
            .into_iter()
            .map(|v| v.version.to_string())
            .collect();
        let mut counts = std::collections::BTreeMap::new();
        let mut failures = Vec::new();
        for row in self.store.package_statuses(&assignment.offer_as).await? {
            if !versions.contains(row.offered_version.trim_start_matches('v')) {
                continue;
            }
            if row.status == InstallStatus::InstallFailed {
                failures.push((row.uid, row.offered_version.clone(), row.error_message));
            }
            *counts.entry((row.offered_version, row.status)).or_insert(0) += 1;
        }
        Ok(RolloutStatus {
            assignment,
            counts,
            failures,
        })
    }

    /// Creates an assignment, by `caller` (an admin), audited. A package outside the
    /// caller's names is "not found", as everywhere.
    pub async fn assign(&self, new: NewAssignment, caller: &Caller) -> Result<Assignment, Error> {
        caller.require(Role::Admin)?;
        new.check()?;
        // The package must exist, under any platform, for the assignment to make sense.
        if !caller.credential.may_touch(&new.package)
            || self.packages.history(&new.package).await?.is_empty()
        {
            return Err(Error::NotFound(Entity::Package));
        }
        let created = self.store.create_assignment(new).await?;
        tracing::info!(assignment = created.id, package = %created.package, version = %created.version, "assignment created");
        let detail = format!(
            "version {}, offer_as {:?}, rollout {} %, selector {:?}",
            created.version, created.offer_as, created.rollout_percent, created.selector
        );
        self.audit_assignment(AuditAction::AssignmentCreate, caller, &created, detail)
            .await;
        self.offers_may_have_changed().await;
        Ok(created)
    }

    async fn audit_assignment(
        &self,
        action: AuditAction,
        caller: &Caller,
        assignment: &Assignment,
        detail: String,
    ) {
        let mut event = caller.event(action);
        event.package = Some(assignment.package.to_string());
        event.subject = Some(format!("assignment {}", assignment.id));
        event.detail = detail;
        self.audit.record(event).await;
    }

    /// An assignment `caller` may see: one of a package outside its names is "not found".
    pub(crate) async fn assignment_for(
        &self,
        id: i64,
        caller: &Caller,
    ) -> Result<Assignment, Error> {
        let assignment = self.assignment(id).await?;
        if !caller.credential.may_touch(&assignment.package) {
            return Err(Error::NotFound(Entity::Assignment));
        }
        Ok(assignment)
    }

    pub async fn assignments(&self) -> Result<Vec<Assignment>, Error> {
        Ok(self.store.assignments().await?)
    }

    /// The assignments `caller` (a viewer at least) may see: those of packages within its
    /// names.
    pub async fn assignments_for(&self, caller: &Caller) -> Result<Vec<Assignment>, Error> {
        caller.require(Role::Viewer)?;
        let mut all = self.store.assignments().await?;
        all.retain(|a| caller.reads(&a.package).is_ok());
        Ok(all)
    }

    pub async fn assignment(&self, id: i64) -> Result<Assignment, Error> {
        self.store
            .assignment(id)
            .await?
            .ok_or(Error::NotFound(Entity::Assignment))
    }

    /// Changes an assignment: its version (a rollback is a change to an older one), its
    /// rollout, its failure ratio, or pauses or resumes it.
    pub async fn change_assignment(
        &self,
        id: i64,
        patch: AssignmentPatch,
        caller: &Caller,
    ) -> Result<Assignment, Error> {
        caller.require(Role::Admin)?;
        if let Some(p) = patch.rollout_percent {
            agentpkg_model::check_rollout(p)?;
        }
        if let Some(r) = patch.max_failure_ratio {
            agentpkg_model::check_ratio(r)?;
        }
        let assignment = self.assignment_for(id, caller).await?;
        if patch.version.is_some() {
            self.check_no_rollout_moving(&assignment).await?;
        }
        let detail = describe(&patch);
        let changed = self
            .store
            .update_assignment(id, patch)
            .await?
            .ok_or(Error::NotFound(Entity::Assignment))?;
        tracing::info!(assignment = id, version = %changed.version, rollout = changed.rollout_percent, paused = changed.paused.as_deref(), "assignment changed");
        self.audit_assignment(AuditAction::AssignmentChange, caller, &changed, detail)
            .await;
        self.offers_may_have_changed().await;
        Ok(changed)
    }

    /// Deletes an assignment, by `caller`, audited.
    pub async fn unassign(&self, id: i64, caller: &Caller) -> Result<(), Error> {
        caller.require(Role::Admin)?;
        let assignment = self.assignment_for(id, caller).await?;
        if self.store.delete_assignment(id).await? {
            let detail = format!("version {}", assignment.version);
            self.audit_assignment(AuditAction::AssignmentDelete, caller, &assignment, detail)
                .await;
            self.offers_may_have_changed().await;
            Ok(())
        } else {
            Err(Error::NotFound(Entity::Assignment))
        }
    }

    /// Forgets an agent and releases its binding, by `caller` (an admin), audited: its next
    /// message, under any credential, registers it anew with its full state.
    pub async fn forget(&self, uid: &AgentUid, caller: &Caller) -> Result<(), Error> {
        caller.require(Role::Admin)?;
        let agent = self.agent(uid).await?;
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
        if !self.store.forget_agent(uid).await? {
            return Err(Error::NotFound(Entity::Agent));
        }
        let mut event = caller.event(AuditAction::AgentForget);
        event.subject = Some(format!("agent {uid}"));
        event.detail = agent
            .owner
            .map_or_else(|| "unbound".to_owned(), |o| format!("was bound to {o}"));
        self.audit.record(event).await;
        Ok(())
    }

    /// Forgets the agents silent for `after` (none when zero); how many went.
    pub async fn forget_silent(&self, after: std::time::Duration) -> Result<u64, Error> {
        if after.is_zero() {
            return Ok(0);
        }
        let before = Utc::now()
            - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::days(36_500));
        let n = self.store.forget_silent_agents(before).await?;
        if n > 0 {
            tracing::info!(agents = n, "silent agents forgotten");
        }
        Ok(n)
    }

    /// Forgets silent agents every `every` until the task is aborted. Every replica may
    /// run it: a delete of rows older than a time is the same done twice.
    pub fn spawn_forgetter(
        &self,
        after: std::time::Duration,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = fleet.forget_silent(after).await {
                    tracing::warn!(error = %e, "silent agents not forgotten; the next pass tries again");
                }
            }
        })
    }

    /// Agents that pass `filter`, most recently seen first: filtered and paged by the
    /// database, so memory does not grow with the fleet.
    pub async fn agents(
        &self,
        page: PageRequest,
        filter: &AgentFilter,
    ) -> Result<Page<Agent>, Error> {
        Ok(self.store.list_agents(page, filter.clone()).await?)
    }

    pub async fn agent(&self, uid: &AgentUid) -> Result<Agent, Error> {
        self.store
            .agent(uid)
            .await?
            .ok_or(Error::NotFound(Entity::Agent))
    }
}

/// An assignment change in words, for the audit log.
fn describe(patch: &AssignmentPatch) -> String {
    let mut parts = Vec::new();
    if let Some(version) = &patch.version {
        parts.push(format!("version {version}"));
    }
    if let Some(percent) = patch.rollout_percent {
        parts.push(format!("rollout {percent} %"));
    }
    if let Some(ratio) = patch.max_failure_ratio {
        parts.push(format!("max failure ratio {ratio}"));
    }
    match &patch.paused {
        Some(Some(why)) => parts.push(format!("paused ({why})")),
        Some(None) => parts.push("resumed".to_owned()),
        None => {}
    }
    if parts.is_empty() {
        "nothing changed".to_owned()
    } else {
        parts.join("; ")
    }
}
