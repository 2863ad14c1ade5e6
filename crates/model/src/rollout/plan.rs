//! A rollout's plan as an operator writes it, its checks, and the arithmetic of waves,
//! thresholds and windows.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::WaveCounts;
use crate::ValidationError;
use crate::closed_set::closed_set;

/// How many agents a wave covers, counted from the first wave: a number of agents, or a
/// share of the agents the assignment selects when the wave starts. `{"agents": 5}` or
/// `{"percent": 10}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveSize {
    Agents(u64),
    Percent(f64),
}

impl WaveSize {
    /// How many of `population` agents this wave covers, cumulatively (at least one when
    /// there is anyone).
    pub fn of(self, population: u64) -> u64 {
        match self {
            Self::Agents(n) => n.min(population),
            Self::Percent(p) => {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let n = ((p / 100.0) * population as f64).ceil() as u64;
                n.clamp(u64::from(population > 0), population)
            }
        }
    }
}

/// When a wave is done: at least `min_ratio` of its agents report the new version
/// installed and healthy, without a break, for `healthy_for_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRule {
    #[serde(default = "default_bake")]
    pub healthy_for_secs: u64,
    #[serde(default = "default_min_ratio")]
    pub min_ratio: f64,
}

fn default_bake() -> u64 {
    600
}

fn default_min_ratio() -> f64 {
    0.95
}

impl Default for SuccessRule {
    fn default() -> Self {
        Self {
            healthy_for_secs: default_bake(),
            min_ratio: default_min_ratio(),
        }
    }
}

/// What counts as a failed agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The agent reported the install of the new version failed (after its retries).
    InstallFailed,
    /// The agent reported the new version installed, then reported itself unhealthy.
    UnhealthyAfterInstall,
    /// The agent did not report the new version installed within this many seconds of
    /// the offer, or stopped reporting for that long after.
    NoReportWithin(u64),
}

impl FailureKind {
    /// The word stored for a failure of this kind (the seconds apart).
    pub fn code(self) -> &'static str {
        match self {
            Self::InstallFailed => "install_failed",
            Self::UnhealthyAfterInstall => "unhealthy_after_install",
            Self::NoReportWithin(_) => "no_report",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoReportWithin(secs) => write!(f, "no_report_within_secs:{secs}"),
            other => f.write_str(other.code()),
        }
    }
}

impl FromStr for FailureKind {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "install_failed" => Ok(Self::InstallFailed),
            "unhealthy_after_install" => Ok(Self::UnhealthyAfterInstall),
            other => other
                .strip_prefix("no_report_within_secs:")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| (1..=30 * 86_400).contains(n))
                .map(Self::NoReportWithin)
                .ok_or_else(|| {
                    ValidationError::new(
                        "failure.count",
                        format!(
                            "{other:?} is not a failure: use install_failed, unhealthy_after_install or no_report_within_secs:N (N from 1 to 2592000)"
                        ),
                    )
                }),
        }
    }
}

impl Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FailureKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// When a rollout fails: more than `max_failed` agents failed, or more than `max_ratio` of
/// a wave's agents (or of all agents offered so far) once at least `min_sample` were
/// offered. Failures of the kinds in `count` count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRule {
    #[serde(default)]
    pub max_failed: Option<u64>,
    #[serde(default)]
    pub max_ratio: Option<f64>,
    /// Agents a ratio is judged on, at the least (default 5).
    #[serde(default = "default_min_sample")]
    pub min_sample: u64,
    #[serde(default = "default_count")]
    pub count: Vec<FailureKind>,
}

fn default_min_sample() -> u64 {
    5
}

fn default_count() -> Vec<FailureKind> {
    vec![
        FailureKind::InstallFailed,
        FailureKind::UnhealthyAfterInstall,
    ]
}

impl Default for FailureRule {
    fn default() -> Self {
        Self {
            max_failed: None,
            max_ratio: Some(0.05),
            min_sample: default_min_sample(),
            count: default_count(),
        }
    }
}

impl FailureRule {
    pub fn counts(&self, code: &str) -> bool {
        self.count.iter().any(|k| k.code() == code)
    }

    /// The silence past which an agent counts as failed, if silence counts.
    pub fn no_report_within(&self) -> Option<u64> {
        self.count.iter().find_map(|k| match k {
            FailureKind::NoReportWithin(secs) => Some(*secs),
            _ => None,
        })
    }

    /// Why the rollout fails, in words, if it does: `wave` is the current wave's counts,
    /// `all` every wave's so far.
    pub fn tripped(
        &self,
        wave_index: usize,
        wave: &WaveCounts,
        all: &WaveCounts,
    ) -> Option<String> {
        if let Some(max) = self.max_failed
            && all.failed > max
        {
            return Some(format!(
                "{} agents failed, more than the {max} allowed ({})",
                all.failed,
                all.failures_in_words()
            ));
        }
        let ratio = self.max_ratio?;
        for (what, counts) in [
            (format!("wave {}", wave_index + 1), wave),
            ("the rollout so far".to_owned(), all),
        ] {
            if counts.members >= self.min_sample.max(1) && counts.members > 0 {
                #[allow(clippy::cast_precision_loss)]
                let share = counts.failed as f64 / counts.members as f64;
                if share > ratio {
                    return Some(format!(
                        "{} of {} agents in {what} failed ({:.1} % > {:.1} %; {})",
                        counts.failed,
                        counts.members,
                        share * 100.0,
                        ratio * 100.0,
                        counts.failures_in_words()
                    ));
                }
            }
        }
        None
    }
}

closed_set!(
    /// What happens when a failure threshold is passed.
    #[derive(Default)]
    OnFailure, "on_failure", {
        /// No agent is newly offered the version until an admin resumes.
        #[default]
        Pause => "pause",
        /// Every agent the rollout moved is offered the version it reported before.
        Revert => "revert",
    }
);

closed_set!(
    /// Whose word a wave waits for.
    #[derive(Default)]
    Approval, "approval", {
        #[default]
        None => "none",
        /// Every wave waits for an admin's approval.
        EachWave => "each_wave",
        /// The first wave waits for an admin's approval; the others follow on their own.
        FirstWave => "first_wave",
    }
);

/// A maintenance window: open for `duration_secs` from each time `cron` (five fields:
/// minute, hour, day of month, month, day of week) matches in `timezone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub cron: String,
    pub duration_secs: u64,
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

impl Window {
    fn parsed(&self) -> Result<(croner::Cron, chrono_tz::Tz), ValidationError> {
        if self.cron.split_whitespace().count() != 5 {
            return Err(ValidationError::new(
                "window.cron",
                "must have five fields: minute hour day-of-month month day-of-week",
            ));
        }
        let cron = croner::Cron::from_str(&self.cron)
            .map_err(|e| ValidationError::new("window.cron", e.to_string()))?;
        let tz = self.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            ValidationError::new(
                "window.timezone",
                format!(
                    "{:?} is not an IANA time zone (such as Europe/Berlin or UTC)",
                    self.timezone
                ),
            )
        })?;
        Ok((cron, tz))
    }

    pub fn check(&self) -> Result<(), ValidationError> {
        self.parsed()?;
        if !(60..=7 * 86_400).contains(&self.duration_secs) {
            return Err(ValidationError::new(
                "window.duration_secs",
                "must be from 60 (one minute) to 604800 (a week)",
            ));
        }
        Ok(())
    }

    /// Whether the window is open at `at`; if not, when it opens next (`None` when the
    /// pattern never matches again).
    pub fn open_at(
        &self,
        at: DateTime<Utc>,
    ) -> Result<Result<(), Option<DateTime<Utc>>>, ValidationError> {
        let (cron, tz) = self.parsed()?;
        let duration = Duration::seconds(i64::try_from(self.duration_secs).unwrap_or(i64::MAX / 2));
        let since = (at - duration).with_timezone(&tz);
        // The first opening after `at - duration` is at or before `at` exactly when a
        // window that started then is still open.
        if let Ok(start) = cron.find_next_occurrence(&since, false)
            && start.with_timezone(&Utc) <= at
        {
            return Ok(Ok(()));
        }
        let next = cron
            .find_next_occurrence(&at.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        Ok(Err(next))
    }
}

/// Failed installs offered again, each after a pause that doubles, before they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default)]
    pub attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_secs: u64,
}

fn default_backoff() -> u64 {
    300
}

impl Retry {
    /// The pause before offering again after the `attempt`-th try (1-based) failed.
    pub fn backoff_after(self, attempt: u32) -> u64 {
        self.backoff_secs
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
    }
}

/// A rollout's plan, as an operator writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    pub waves: Vec<WaveSize>,
    #[serde(default)]
    pub success: SuccessRule,
    #[serde(default)]
    pub failure: FailureRule,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub window: Option<Window>,
    #[serde(default)]
    pub approval: Approval,
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub retry: Retry,
}

/// Most waves a plan may have.
pub const MAX_WAVES: usize = 20;

impl RolloutPlan {
    pub fn check(&self) -> Result<(), ValidationError> {
        let waves = |m: &str| ValidationError::new("waves", m.to_owned());
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return Err(waves("from 1 to 20 waves"));
        }
        let mut last_agents = 0;
        let mut last_percent = 0.0;
        for w in &self.waves {
            match *w {
                WaveSize::Agents(n) => {
                    if n == 0 || n < last_agents {
                        return Err(waves(
                            "a wave of agents counts from the first wave: at least 1, and not fewer than an earlier one",
                        ));
                    }
                    last_agents = n;
                }
                WaveSize::Percent(p) => {
                    if !(p > 0.0 && p <= 100.0) || p < last_percent {
                        return Err(waves(
                            "a wave's percent counts from the first wave: more than 0, at most 100, and not less than an earlier one",
                        ));
                    }
                    last_percent = p;
                }
            }
        }
        if self.waves.last() != Some(&WaveSize::Percent(100.0)) {
            return Err(waves(
                "the last wave must be {\"percent\": 100}: a completed rollout moves the whole assignment to its version",
            ));
        }
        if !(self.success.min_ratio > 0.0 && self.success.min_ratio <= 1.0) {
            return Err(ValidationError::new(
                "success.min_ratio",
                "must be more than 0 and at most 1",
            ));
        }
        if self.success.healthy_for_secs > 30 * 86_400 {
            return Err(ValidationError::new(
                "success.healthy_for_secs",
                "at most 2592000 (30 days)",
            ));
        }
        if self
            .failure
            .max_ratio
            .is_some_and(|r| !(0.0..=1.0).contains(&r))
        {
            return Err(ValidationError::new(
                "failure.max_ratio",
                "must be from 0 to 1",
            ));
        }
        if self.failure.count.is_empty() {
            return Err(ValidationError::new(
                "failure.count",
                "name at least one kind of failure",
            ));
        }
        if let Some(window) = &self.window {
            window.check()?;
        }
        if self.retry.attempts > 10 || self.retry.backoff_secs > 86_400 {
            return Err(ValidationError::new(
                "retry",
                "at most 10 attempts, and a backoff of at most 86400 seconds",
            ));
        }
        Ok(())
    }

    /// Whether wave `index` (0-based) waits for an admin's approval.
    pub fn needs_approval(&self, index: usize) -> bool {
        match self.approval {
            Approval::None => false,
            Approval::EachWave => true,
            Approval::FirstWave => index == 0,
        }
    }

    /// How many of a wave's `members` must be healthy for the bake time (or installed,
    /// to start baking).
    pub fn needed(&self, members: u64) -> u64 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let n = (self.success.min_ratio * members as f64 - 1e-9).ceil() as u64;
        n.min(members)
    }
}

#[cfg(test)]
mod tests;
