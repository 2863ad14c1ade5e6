//! The store of progressive rollouts, as the fleet's rollout engine sees it
//! (`fleet/rollouts.rs` keeps it in the database).

use std::sync::Arc;

use agentpkg_model::{
    AgentUid, MemberPhase, NewAuditEvent, NewRollout, Rollout, RolloutMember, RolloutState,
    RolloutTransition, Version, WaveCounts,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{Health, StoreError};

/// One step of a rollout, taken only if the rollout is still at `expected_step`.
#[derive(Debug, Clone)]
pub struct RolloutStep {
    pub rollout_id: i64,
    pub expected_step: u64,
    pub state: RolloutState,
    pub cause: String,
    pub wave: usize,
    pub wave_started: bool,
    pub approved_wave: Option<usize>,
    /// When, on the rollout's clock.
    pub at: DateTime<Utc>,
    /// Who, when a person took it.
    pub actor: Option<String>,
    /// Agents the step offers the version (uid, version they reported before), in `wave`.
    pub new_members: Vec<(AgentUid, String)>,
    /// Failures seen so far no longer count (a resume).
    pub acknowledge_failures: bool,
    /// Every agent the rollout moved is offered its previous version again.
    pub revert_members: bool,
    /// The rollout completed: its assignment offers its version to every agent, and the
    /// rollout no longer governs them.
    pub complete_assignment: Option<(i64, Version)>,
    pub event: NewAuditEvent,
}

/// An agent an assignment's selector may pick, as a wave about to start reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The agent's instance uid (hex).
    pub uid: String,
    /// Identifying and non-identifying attributes (JSON objects).
    pub identifying: String,
    pub non_identifying: String,
    /// The version it reports of the name offered, if any.
    pub has_version: Option<String>,
    /// Whether it is already one of the rollout's agents.
    pub member: bool,
}

/// Rollouts, their agents and transitions, and the engine's lease.
#[async_trait]
pub trait RolloutStore: Health {
    /// Creates a rollout and points its assignment at it — pinned to `pin` (its stable
    /// version) when given — with its first transition and `event`, in one transaction.
    /// [`StoreError::Conflict`] when the assignment has a rollout still moving.
    async fn create_rollout(
        &self,
        new: NewRollout,
        pin: Option<String>,
        event: NewAuditEvent,
    ) -> Result<Rollout, StoreError>;
    async fn rollout(&self, id: i64) -> Result<Option<Rollout>, StoreError>;
    /// An assignment's rollouts, newest first.
    async fn rollouts_of(&self, assignment_id: i64) -> Result<Vec<Rollout>, StoreError>;
    /// The rollouts the engine still moves, oldest first.
    async fn active_rollouts(&self) -> Result<Vec<Rollout>, StoreError>;
    async fn transitions(&self, id: i64) -> Result<Vec<RolloutTransition>, StoreError>;
    /// Each wave's agents by phase (index = wave; `baked` counts those healthy since
    /// `baked_before` or earlier; `failed` those whose failure kind is in `counted` and not
    /// acknowledged), and how many rows the database returned for it.
    async fn wave_counts(
        &self,
        id: i64,
        baked_before: DateTime<Utc>,
        counted: Vec<&'static str>,
    ) -> Result<(Vec<WaveCounts>, u64), StoreError>;
    /// A rollout's agents (in `phase` only, when given), by wave, at most `limit`.
    async fn rollout_members(
        &self,
        id: i64,
        phase: Option<MemberPhase>,
        limit: i64,
    ) -> Result<Vec<RolloutMember>, StoreError>;
    /// What the agent is in each of `rollouts`.
    async fn memberships(
        &self,
        uid: &AgentUid,
        rollouts: Vec<i64>,
    ) -> Result<Vec<RolloutMember>, StoreError>;
    /// Writes what a report changed of one agent, unless the engine moved it since `was`
    /// was read; whether it was written.
    async fn observe_member(
        &self,
        was: RolloutMember,
        now: RolloutMember,
    ) -> Result<bool, StoreError>;
    /// Takes one step — the rollout's update, its transition, its new agents, the
    /// acknowledgement or revert of its agents, its assignment on completion and the
    /// audit event — in one transaction, if the rollout is still at the step expected;
    /// `None` when another writer took it.
    async fn step_rollout(&self, step: RolloutStep) -> Result<Option<Rollout>, StoreError>;
    /// Marks as failed (silent) the agents offered the version before `before` that did
    /// not report it installed, and those that have not reported since then.
    async fn mark_silent(
        &self,
        id: i64,
        before: DateTime<Utc>,
        at: DateTime<Utc>,
        message: String,
    ) -> Result<u64, StoreError>;
    /// Offers again the failed installs whose pause ended by `at`.
    async fn retry_due(&self, id: i64, at: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Agents with the version each reports under `offer_as` and whether each is already
    /// one of rollout `id`'s, by uid, the first `limit` after `after` (read a page per
    /// tick when a wave starts).
    async fn candidates(
        &self,
        id: i64,
        offer_as: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError>;
    /// Takes or renews a lease for `holder` until `until`; whether it holds it.
    async fn take_lease(
        &self,
        name: &'static str,
        holder: String,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn drop_lease(&self, name: &'static str, holder: String) -> Result<(), StoreError>;
}

pub type DynRolloutStore = Arc<dyn RolloutStore>;
