//! Progressive rollouts in the database.

use agentpkg_model::{
    AgentUid, MemberPhase, NewAuditEvent, NewRollout, Rollout, RolloutMember, RolloutTransition,
    WaveCounts,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rollouts;
use crate::{Candidate, DieselStore, RolloutStep, RolloutStore, StoreError};

#[async_trait]
impl RolloutStore for DieselStore {
    async fn create_rollout(
        &self,
        new: NewRollout,
        pin: Option<String>,
        event: NewAuditEvent,
    ) -> Result<Rollout, StoreError> {
        self.with_conn("create_rollout", move |c| {
            rollouts::create(c, &new, pin.as_deref(), &event)
        })
        .await
    }

    async fn rollout(&self, id: i64) -> Result<Option<Rollout>, StoreError> {
        self.with_conn_read("rollout", move |c| rollouts::get(c, id))
            .await
    }

    async fn rollouts_of(&self, assignment_id: i64) -> Result<Vec<Rollout>, StoreError> {
        self.with_conn_read("rollouts_of", move |c| {
            rollouts::of_assignment(c, assignment_id)
        })
        .await
    }

    async fn active_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        self.with_conn_read("active_rollouts", rollouts::active)
            .await
    }

    async fn transitions(&self, id: i64) -> Result<Vec<RolloutTransition>, StoreError> {
        self.with_conn_read("rollout_transitions", move |c| rollouts::transitions(c, id))
            .await
    }

    async fn wave_counts(
        &self,
        id: i64,
        baked_before: DateTime<Utc>,
        counted: Vec<&'static str>,
    ) -> Result<(Vec<WaveCounts>, u64), StoreError> {
        self.with_conn_read("rollout_wave_counts", move |c| {
            rollouts::wave_counts(c, id, baked_before, &counted)
        })
        .await
    }

    async fn rollout_members(
        &self,
        id: i64,
        phase: Option<MemberPhase>,
        limit: i64,
    ) -> Result<Vec<RolloutMember>, StoreError> {
        self.with_conn_read("rollout_members", move |c| {
            rollouts::members(c, id, phase, limit)
        })
        .await
    }

    async fn memberships(
        &self,
        uid: &AgentUid,
        rollouts: Vec<i64>,
    ) -> Result<Vec<RolloutMember>, StoreError> {
        let uid = *uid;
        self.with_conn_read("rollout_memberships", move |c| {
            rollouts::memberships(c, &uid, &rollouts)
        })
        .await
    }

    async fn observe_member(
        &self,
        was: RolloutMember,
        now: RolloutMember,
    ) -> Result<bool, StoreError> {
        self.with_conn("rollout_observe", move |c| rollouts::observe(c, &was, &now))
            .await
    }

    async fn step_rollout(&self, step: RolloutStep) -> Result<Option<Rollout>, StoreError> {
        self.with_conn("rollout_step", move |c| rollouts::step(c, &step))
            .await
    }

    async fn mark_silent(
        &self,
        id: i64,
        before: DateTime<Utc>,
        at: DateTime<Utc>,
        message: String,
    ) -> Result<u64, StoreError> {
        self.with_conn("rollout_mark_silent", move |c| {
            rollouts::mark_silent(c, id, before, at, &message)
        })
        .await
    }

    async fn retry_due(&self, id: i64, at: DateTime<Utc>) -> Result<u64, StoreError> {
        self.with_conn("rollout_retry_due", move |c| rollouts::retry_due(c, id, at))
            .await
    }

    async fn candidates(
        &self,
        id: i64,
        offer_as: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        self.with_conn_read("rollout_candidates", move |c| {
            rollouts::candidates(c, id, &offer_as, after.as_deref(), limit)
        })
        .await
    }

    async fn take_lease(
        &self,
        name: &'static str,
        holder: String,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.with_conn("take_lease", move |c| {
            super::leases::take_lease(c, name, &holder, until)
        })
        .await
    }

    async fn drop_lease(&self, name: &'static str, holder: String) -> Result<(), StoreError> {
        self.with_conn("drop_lease", move |c| {
            super::leases::drop_lease(c, name, &holder)
        })
        .await
    }
}
