//! Progressive rollouts: the plan an operator writes and its checks, the states a rollout
//! and each of its agents go through, and the arithmetic of waves, thresholds, windows and
//! the rollout clock. No I/O: the engine that moves rollouts lives in the fleet crate.

mod plan;
mod state;

pub use plan::{
    Approval, FailureKind, FailureRule, MAX_WAVES, OnFailure, Retry, RolloutPlan, SuccessRule,
    WaveSize, Window,
};
pub use state::{
    MemberPhase, NewRollout, Rollout, RolloutClock, RolloutMember, RolloutState, RolloutTransition,
    WaveCounts,
};
