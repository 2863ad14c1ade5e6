use super::*;

fn plan(json: &str) -> Result<RolloutPlan, String> {
    let p: RolloutPlan = serde_json::from_str(json).map_err(|e| e.to_string())?;
    p.check().map_err(|e| e.to_string())?;
    Ok(p)
}

#[test]
fn the_issues_example_plan_is_read_and_written_back_the_same() {
    let p = plan(
        r#"{"waves": [{"agents": 5}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
            "success": {"healthy_for_secs": 600, "min_ratio": 0.95},
            "failure": {"max_failed": 3, "max_ratio": 0.05, "count": ["install_failed", "unhealthy_after_install", "no_report_within_secs:1800"]},
            "on_failure": "revert",
            "window": {"cron": "0 22 * * 1-5", "duration_secs": 14400, "timezone": "Europe/Berlin"},
            "approval": "first_wave", "start_at": "2026-12-07T22:00:00Z",
            "retry": {"attempts": 2, "backoff_secs": 300}}"#,
    )
    .unwrap();
    assert_eq!(p.waves[0], WaveSize::Agents(5));
    assert_eq!(p.failure.no_report_within(), Some(1800));
    assert_eq!(p.on_failure, OnFailure::Revert);
    let again: RolloutPlan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(again, p);
    assert!(p.needs_approval(0) && !p.needs_approval(1));
}

#[test]
fn bad_plans_name_their_field() {
    for (json, field) in [
        (r#"{"waves": []}"#, "waves"),
        (r#"{"waves": [{"percent": 50}]}"#, "waves"),
        (
            r#"{"waves": [{"percent": 50}, {"percent": 10}, {"percent": 100}]}"#,
            "waves",
        ),
        (r#"{"waves": [{"agents": 0}, {"percent": 100}]}"#, "waves"),
        (
            r#"{"waves": [{"percent": 100}], "success": {"min_ratio": 0}}"#,
            "success.min_ratio",
        ),
        (
            r#"{"waves": [{"percent": 100}], "failure": {"max_ratio": 2}}"#,
            "failure.max_ratio",
        ),
        (
            r#"{"waves": [{"percent": 100}], "window": {"cron": "0 22 * *", "duration_secs": 600}}"#,
            "window.cron",
        ),
        (
            r#"{"waves": [{"percent": 100}], "window": {"cron": "0 22 * * *", "duration_secs": 600, "timezone": "Mars/Base"}}"#,
            "window.timezone",
        ),
        (
            r#"{"waves": [{"percent": 100}], "window": {"cron": "0 22 * * *", "duration_secs": 5}}"#,
            "window.duration_secs",
        ),
        (
            r#"{"waves": [{"percent": 100}], "retry": {"attempts": 11}}"#,
            "retry",
        ),
    ] {
        let err = plan(json).unwrap_err();
        assert!(err.starts_with(field), "{json}: {err}");
    }
    let err = serde_json::from_str::<RolloutPlan>(
        r#"{"waves": [{"percent": 100}], "failure": {"count": ["no_report_within_secs:x"]}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no_report_within_secs:N"), "{err}");
}

#[test]
fn waves_count_from_the_first_and_never_shrink_below_one() {
    assert_eq!(WaveSize::Agents(5).of(200), 5);
    assert_eq!(WaveSize::Agents(5).of(3), 3);
    assert_eq!(WaveSize::Percent(10.0).of(200), 20);
    assert_eq!(WaveSize::Percent(10.0).of(3), 1);
    assert_eq!(WaveSize::Percent(100.0).of(201), 201);
    assert_eq!(WaveSize::Percent(1.0).of(0), 0);
    let p = plan(r#"{"waves": [{"percent": 100}], "success": {"min_ratio": 0.95}}"#).unwrap();
    assert_eq!(p.needed(20), 19);
    assert_eq!(p.needed(5), 5);
    assert_eq!(p.needed(0), 0);
}

#[test]
fn thresholds_trip_on_counts_and_on_ratios_past_the_sample() {
    let rule = FailureRule {
        max_failed: Some(3),
        max_ratio: Some(0.2),
        min_sample: 5,
        count: default_count(),
    };
    let counts = |members, failed| WaveCounts {
        members,
        failed,
        ..WaveCounts::default()
    };
    assert!(
        rule.tripped(0, &counts(4, 2), &counts(4, 2)).is_none(),
        "below the sample"
    );
    let why = rule.tripped(1, &counts(10, 3), &counts(15, 3)).unwrap();
    assert!(why.contains("3 of 10 agents in wave 2"), "{why}");
    assert!(rule.tripped(1, &counts(20, 3), &counts(25, 3)).is_none());
    let why = rule.tripped(2, &counts(100, 1), &counts(200, 4)).unwrap();
    assert!(why.contains("more than the 3 allowed"), "{why}");
}

#[test]
fn windows_open_for_their_duration_from_each_match_in_their_zone() {
    let w = Window {
        cron: "0 22 * * 1-5".into(),
        duration_secs: 4 * 3600,
        timezone: "Europe/Berlin".into(),
    };
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    // Monday 7 December 2026: 22:00 in Berlin is 21:00 UTC.
    assert_eq!(w.open_at(at("2026-12-07T21:30:00Z")).unwrap(), Ok(()));
    assert_eq!(w.open_at(at("2026-12-08T00:59:00Z")).unwrap(), Ok(()));
    assert_eq!(
        w.open_at(at("2026-12-08T01:00:00Z")).unwrap(),
        Err(Some(at("2026-12-08T21:00:00Z")))
    );
    // Saturday night: closed until Monday.
    assert_eq!(
        w.open_at(at("2026-12-12T21:30:00Z")).unwrap(),
        Err(Some(at("2026-12-14T21:00:00Z")))
    );
}
