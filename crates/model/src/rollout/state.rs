//! Where a rollout and each of its agents stand, as stored, and the clock it runs on.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::RolloutPlan;
use crate::Version;
use crate::closed_set::closed_set;

closed_set!(
    /// Where a rollout stands (the diagram is in docs/architecture.md).
    RolloutState, "state", {
        Scheduled => "scheduled",
        WaitingForWindow => "waiting_for_window",
        WaitingForApproval => "waiting_for_approval",
        Rolling => "rolling",
        Baking => "baking",
        Paused => "paused",
        Reverting => "reverting",
        Reverted => "reverted",
        Completed => "completed",
        Aborted => "aborted",
    }
);

impl RolloutState {
    /// Whether the engine still moves it (an assignment has at most one such rollout).
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Completed | Self::Reverted | Self::Aborted)
    }
}

closed_set!(
    /// Where one agent of a rollout stands.
    MemberPhase, "phase", {
        Offered => "offered",
        Installed => "installed",
        Healthy => "healthy",
        Failed => "failed",
        Retrying => "retrying",
        Reverting => "reverting",
        Reverted => "reverted",
    }
);

impl MemberPhase {
    /// Whether the agent is offered the version it had before rather than the new one.
    pub fn reverts(self) -> bool {
        matches!(self, Self::Reverting | Self::Reverted)
    }
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub id: i64,
    pub assignment_id: i64,
    pub version: Version,
    /// The version the assignment offered before (its stable version), when it had one.
    pub from_version: Option<Version>,
    pub plan: RolloutPlan,
    pub state: RolloutState,
    /// Why it is in that state, in words.
    pub cause: String,
    /// The current wave, or the next one to start (0-based).
    pub wave: usize,
    /// Whether the current wave's agents were chosen and offered the version.
    pub wave_started: bool,
    /// The highest wave an admin approved, if any.
    pub approved_wave: Option<usize>,
    /// Transitions so far: each one moves it by one, once, on one replica.
    pub step: u64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A rollout to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRollout {
    pub assignment_id: i64,
    pub version: Version,
    pub from_version: Option<Version>,
    pub plan: RolloutPlan,
    pub state: RolloutState,
    pub cause: String,
    pub created_by: String,
}

/// One step of a rollout, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutTransition {
    pub step: u64,
    pub at: DateTime<Utc>,
    pub state: RolloutState,
    /// The wave it concerns (1-based in words; 0-based here).
    pub wave: usize,
    pub cause: String,
    /// Who, when a person moved it.
    pub actor: Option<String>,
}

/// A wave's agents by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaveCounts {
    pub members: u64,
    pub offered: u64,
    pub installed: u64,
    /// Healthy on the new version, baking or baked.
    pub healthy: u64,
    /// Healthy for the whole bake time.
    pub baked: u64,
    /// Failures that count and were not acknowledged.
    pub failed: u64,
    /// Every failed agent, acknowledged or not.
    pub failed_all: u64,
    pub install_failed: u64,
    pub unhealthy: u64,
    pub silent: u64,
    pub retrying: u64,
    pub reverting: u64,
    pub reverted: u64,
}

impl WaveCounts {
    pub fn add(&mut self, o: &Self) {
        self.members += o.members;
        self.offered += o.offered;
        self.installed += o.installed;
        self.healthy += o.healthy;
        self.baked += o.baked;
        self.failed += o.failed;
        self.failed_all += o.failed_all;
        self.install_failed += o.install_failed;
        self.unhealthy += o.unhealthy;
        self.silent += o.silent;
        self.retrying += o.retrying;
        self.reverting += o.reverting;
        self.reverted += o.reverted;
    }

    pub(crate) fn failures_in_words(&self) -> String {
        format!(
            "install failed {}, unhealthy after install {}, silent {}",
            self.install_failed, self.unhealthy, self.silent
        )
    }
}

/// One agent of a rollout, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutMember {
    pub rollout_id: i64,
    pub uid: crate::AgentUid,
    pub wave: usize,
    /// The version the agent reported before the wave offered it the new one ("" for
    /// none).
    pub previous_version: String,
    pub phase: MemberPhase,
    pub attempts: u32,
    pub offered_at: DateTime<Utc>,
    pub installed_at: Option<DateTime<Utc>>,
    pub healthy_since: Option<DateTime<Utc>>,
    pub last_report_at: Option<DateTime<Utc>>,
    /// The last failure's kind (`install_failed`, `unhealthy_after_install`, `no_report`).
    pub failure: Option<String>,
    pub failure_message: String,
    pub failed_at: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub acknowledged: bool,
}

/// The time a rollout runs on: the wall clock, or for tests and demonstrations, a clock
/// `scale` times as fast from the rollout's creation (so a bake time of ten minutes
/// passes in a second at 600). Every replica computes the same time from the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutClock {
    pub anchor: DateTime<Utc>,
    pub scale: u32,
}

impl RolloutClock {
    pub fn at(self, real: DateTime<Utc>) -> DateTime<Utc> {
        if self.scale <= 1 {
            return real;
        }
        // A clock run fast for years would leave what dates can hold: it stops at the end.
        (real - self.anchor)
            .checked_mul(i32::try_from(self.scale).unwrap_or(i32::MAX))
            .and_then(|elapsed| self.anchor.checked_add_signed(elapsed))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn now(self) -> DateTime<Utc> {
        self.at(Utc::now())
    }

    /// How long `secs` of rollout time take on the wall clock.
    pub fn real(self, secs: u64) -> std::time::Duration {
        std::time::Duration::from_secs_f64(secs as f64 / f64::from(self.scale.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::RolloutClock;
    use crate::Retry;

    #[test]
    fn the_fast_clock_runs_from_the_anchor_and_retries_back_off() {
        let anchor = "2026-12-06T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let clock = RolloutClock { anchor, scale: 600 };
        assert_eq!(
            clock.at(anchor + Duration::seconds(1)),
            anchor + Duration::seconds(600)
        );
        assert_eq!(
            RolloutClock { anchor, scale: 1 }.at(anchor + Duration::seconds(7)),
            anchor + Duration::seconds(7)
        );
        let retry = Retry {
            attempts: 3,
            backoff_secs: 300,
        };
        assert_eq!([1, 2, 3].map(|a| retry.backoff_after(a)), [300, 600, 1200]);
    }
}
