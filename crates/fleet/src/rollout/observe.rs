//! What an agent's message says about its place in a rollout: installed, healthy since
//! when, failed and why, reverted. Decided here from the agent as just recorded; written
//! by the store only if the engine did not move the agent meanwhile.

use agentpkg_model::{Agent, InstallStatus, MemberPhase, Rollout, RolloutMember};
use chrono::{DateTime, Duration, Utc};

use crate::proto::AgentCapabilities;

/// How stale an agent's last report may get before a message refreshes it, when silence
/// counts (on the rollout's clock): a tenth of the silence allowed, from 30 s to 5 min — so
/// a quiet agent costs a write that often, not per heartbeat, and none when silence does
/// not count.
fn report_precision(rollout: &Rollout) -> Option<Duration> {
    let secs = rollout.plan.failure.no_report_within()?;
    Some(Duration::seconds(
        i64::try_from(secs / 10).unwrap_or(300).clamp(30, 300),
    ))
}

/// The agent's new place in the rollout, if the message changed it.
pub(crate) fn observe(
    member: &RolloutMember,
    rollout: &Rollout,
    agent: &Agent,
    offer_as: &str,
    now: DateTime<Utc>,
) -> Option<RolloutMember> {
    let mut next = member.clone();
    if let Some(precision) = report_precision(rollout)
        && next.last_report_at.is_none_or(|t| now - t >= precision)
    {
        next.last_report_at = Some(now);
    }
    let status = agent.package_statuses.iter().find(|s| s.name == offer_as);
    let has = status.map_or("", |s| s.agent_has_version.trim_start_matches('v'));
    let target = rollout.version.to_string();
    // An agent that does not report its health is judged by its install alone.
    let reports_health = agent.capabilities & AgentCapabilities::ReportsHealth as u64 != 0;
    let health = match &agent.health {
        Some(h) => Some(h.healthy),
        None if !reports_health => Some(true),
        None => None,
    };
    match member.phase {
        MemberPhase::Reverting => {
            if has != target && health == Some(true) {
                next.phase = MemberPhase::Reverted;
                next.healthy_since = Some(now);
            }
        }
        MemberPhase::Reverted | MemberPhase::Retrying => {}
        MemberPhase::Offered
        | MemberPhase::Installed
        | MemberPhase::Healthy
        | MemberPhase::Failed => {
            // A failure stands until an admin acknowledges it (resume).
            let settled = member.phase == MemberPhase::Failed && !member.acknowledged;
            if has == target {
                next.installed_at.get_or_insert(now);
                match health {
                    Some(true) if !settled => {
                        next.phase = MemberPhase::Healthy;
                        next.healthy_since.get_or_insert(now);
                    }
                    Some(false) if !settled => {
                        let h = agent.health.as_ref();
                        next.phase = MemberPhase::Failed;
                        next.healthy_since = None;
                        next.failure = Some("unhealthy_after_install".to_owned());
                        next.failure_message = h
                            .map(|h| {
                                if h.last_error.is_empty() {
                                    h.status.clone()
                                } else {
                                    h.last_error.clone()
                                }
                            })
                            .unwrap_or_default();
                        next.failed_at = Some(now);
                        next.acknowledged = false;
                    }
                    None if !settled => {
                        next.phase = MemberPhase::Installed;
                        next.healthy_since = None;
                    }
                    _ => {}
                }
            } else if let Some(s) = status
                && s.status == InstallStatus::InstallFailed
                && s.server_offered_version.trim_start_matches('v') == target
                // Only a report about the latest offer: one about an attempt before a retry
                // is stale.
                && s.answers(&agent.offered)
                && !settled
                && member.phase != MemberPhase::Failed
            {
                next.failure = Some("install_failed".to_owned());
                next.failure_message.clone_from(&s.error_message);
                next.failed_at = Some(now);
                next.healthy_since = None;
                let retry = rollout.plan.retry;
                if member.attempts <= retry.attempts {
                    next.phase = MemberPhase::Retrying;
                    let pause = retry.backoff_after(member.attempts);
                    next.retry_at =
                        Some(now + Duration::seconds(i64::try_from(pause).unwrap_or(i64::MAX)));
                } else {
                    next.phase = MemberPhase::Failed;
                    next.acknowledged = false;
                }
            }
        }
    }
    (next != *member).then_some(next)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agentpkg_model::{
        AgentHealth, AgentPackageStatus, AgentUid, OfferedBuild, RolloutPlan, RolloutState, Version,
    };

    use super::*;

    fn rollout(retries: u32) -> Rollout {
        let plan: RolloutPlan = serde_json::from_str(&format!(
            r#"{{"waves": [{{"percent": 100}}], "retry": {{"attempts": {retries}, "backoff_secs": 60}},
                "failure": {{"count": ["install_failed", "unhealthy_after_install", "no_report_within_secs:300"]}}}}"#
        ))
        .unwrap();
        Rollout {
            id: 1,
            assignment_id: 1,
            version: Version::parse("2.0.0").unwrap(),
            from_version: Some(Version::parse("1.0.0").unwrap()),
            plan,
            state: RolloutState::Rolling,
            cause: String::new(),
            wave: 0,
            wave_started: true,
            approved_wave: None,
            step: 2,
            created_by: "admin".into(),
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    fn member(phase: MemberPhase) -> RolloutMember {
        RolloutMember {
            rollout_id: 1,
            uid: AgentUid::from_bytes(&[1; 16]).unwrap(),
            wave: 0,
            previous_version: "1.0.0".into(),
            phase,
            attempts: 1,
            offered_at: DateTime::UNIX_EPOCH,
            installed_at: None,
            healthy_since: None,
            last_report_at: None,
            failure: None,
            failure_message: String::new(),
            failed_at: None,
            retry_at: None,
            acknowledged: false,
        }
    }

    fn agent(has: &str, status: &str, healthy: Option<bool>) -> Agent {
        let mut a = Agent::new(
            AgentUid::from_bytes(&[1; 16]).unwrap(),
            DateTime::UNIX_EPOCH,
        );
        a.capabilities = AgentCapabilities::ReportsHealth as u64;
        a.health = healthy.map(|healthy| AgentHealth {
            healthy,
            status: "ok".into(),
            last_error: if healthy {
                String::new()
            } else {
                "exporter failing".into()
            },
        });
        a.offered = BTreeMap::from([(
            String::new(),
            OfferedBuild {
                version: "2.0.0".into(),
                hash: "aa".into(),
                at: DateTime::UNIX_EPOCH,
            },
        )]);
        a.package_statuses = vec![AgentPackageStatus {
            name: String::new(),
            agent_has_version: has.into(),
            server_offered_version: "2.0.0".into(),
            server_offered_hash: "aa".into(),
            status: status.parse().unwrap(),
            error_message: "exit status 3".into(),
            ..AgentPackageStatus::default()
        }];
        a
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + Duration::seconds(secs)
    }

    #[test]
    fn installed_then_healthy_bakes_from_the_first_healthy_report() {
        let r = rollout(0);
        let m = member(MemberPhase::Offered);
        let installed = observe(&m, &r, &agent("v2.0.0", "installed", None), "", at(10)).unwrap();
        assert_eq!(installed.phase, MemberPhase::Installed);
        let healthy = observe(
            &installed,
            &r,
            &agent("2.0.0", "installed", Some(true)),
            "",
            at(20),
        )
        .unwrap();
        assert_eq!(
            (healthy.phase, healthy.healthy_since),
            (MemberPhase::Healthy, Some(at(20)))
        );
        // Healthy again later: the bake keeps its start; nothing to write within 30 s.
        assert!(
            observe(
                &healthy,
                &r,
                &agent("2.0.0", "installed", Some(true)),
                "",
                at(35)
            )
            .is_none()
        );
        let later = observe(
            &healthy,
            &r,
            &agent("2.0.0", "installed", Some(true)),
            "",
            at(60),
        )
        .unwrap();
        assert_eq!(later.healthy_since, Some(at(20)));
    }

    #[test]
    fn unhealthy_after_install_fails_and_stays_failed_until_acknowledged() {
        let r = rollout(0);
        let m = observe(
            &member(MemberPhase::Healthy),
            &r,
            &agent("2.0.0", "installed", Some(false)),
            "",
            at(5),
        )
        .unwrap();
        assert_eq!(m.phase, MemberPhase::Failed);
        assert_eq!(m.failure.as_deref(), Some("unhealthy_after_install"));
        assert_eq!(m.failure_message, "exporter failing");
        let again = observe(&m, &r, &agent("2.0.0", "installed", Some(true)), "", at(6));
        assert!(again.is_none_or(|a| a.phase == MemberPhase::Failed));
        let acknowledged = RolloutMember {
            acknowledged: true,
            ..m
        };
        let back = observe(
            &acknowledged,
            &r,
            &agent("2.0.0", "installed", Some(true)),
            "",
            at(7),
        )
        .unwrap();
        assert_eq!(back.phase, MemberPhase::Healthy);
    }

    #[test]
    fn failed_installs_wait_for_their_retries_and_stale_reports_are_ignored() {
        let r = rollout(2);
        let failed = agent("1.0.0", "install_failed", Some(true));
        let m = observe(&member(MemberPhase::Offered), &r, &failed, "", at(100)).unwrap();
        assert_eq!(
            (m.phase, m.retry_at),
            (MemberPhase::Retrying, Some(at(160)))
        );
        let second = RolloutMember {
            phase: MemberPhase::Offered,
            attempts: 2,
            retry_at: None,
            ..m.clone()
        };
        let m2 = observe(&second, &r, &failed, "", at(200)).unwrap();
        assert_eq!(m2.retry_at, Some(at(320)), "the pause doubles");
        let last = RolloutMember {
            phase: MemberPhase::Offered,
            attempts: 3,
            retry_at: None,
            ..m
        };
        assert_eq!(
            observe(&last, &r, &failed, "", at(400)).unwrap().phase,
            MemberPhase::Failed
        );
        // A report answering an earlier offer (another hash) counts for nothing.
        let mut stale = failed.clone();
        stale.offered.get_mut("").unwrap().hash = "bb".into();
        let m = observe(&member(MemberPhase::Offered), &r, &stale, "", at(100)).unwrap();
        assert_eq!(m.phase, MemberPhase::Offered);
    }

    #[test]
    fn a_quiet_healthy_agent_costs_no_write_when_silence_does_not_count() {
        let mut r = rollout(0);
        r.plan.failure.count = vec![agentpkg_model::FailureKind::InstallFailed];
        let healthy = RolloutMember {
            phase: MemberPhase::Healthy,
            installed_at: Some(at(1)),
            healthy_since: Some(at(1)),
            ..member(MemberPhase::Healthy)
        };
        let agent = agent("2.0.0", "installed", Some(true));
        assert!(observe(&healthy, &r, &agent, "", at(10_000)).is_none());
        // Where silence counts, its last report moves on once a tenth of the limit old.
        let r = rollout(0);
        assert_eq!(
            observe(&healthy, &r, &agent, "", at(10_000))
                .unwrap()
                .last_report_at,
            Some(at(10_000))
        );
    }

    #[test]
    fn a_revert_is_done_when_the_agent_runs_another_version_healthy() {
        let r = rollout(0);
        let m = member(MemberPhase::Reverting);
        let still = observe(&m, &r, &agent("2.0.0", "installed", Some(true)), "", at(1)).unwrap();
        assert_eq!(still.phase, MemberPhase::Reverting);
        let done = observe(&m, &r, &agent("1.0.0", "installed", Some(true)), "", at(1)).unwrap();
        assert_eq!(done.phase, MemberPhase::Reverted);
    }
}
