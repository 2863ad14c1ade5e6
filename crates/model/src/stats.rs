//! Download statistics, storage usage and retention policies.

use chrono::{DateTime, NaiveDate, Utc};

use crate::closed_set::closed_set;
use crate::{
    Arch, Checksum, NamePattern, Package, PackageName, Platform, ValidationError, Version,
};

/// Downloads of one package on one UTC day, to add to what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadIncrement {
    pub package_id: i64,
    pub day: NaiveDate,
    /// Downloads as the counting definition has them (a body from the first byte, or a
    /// redirect to one).
    pub downloads: u64,
    /// Bytes sent (for a redirect: the package's size).
    pub bytes: u64,
    /// When the latest of these downloads was answered.
    pub last_at: DateTime<Utc>,
}

/// One day of a package's downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyDownloads {
    pub day: NaiveDate,
    pub downloads: u64,
    pub bytes: u64,
}

/// The most downloaded packages over the last `days` UTC days (today included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopQuery {
    pub days: u32,
    pub limit: u32,
    pub platform: Option<Platform>,
    pub arch: Option<Arch>,
}

impl TopQuery {
    pub const MAX_DAYS: u32 = 3660;
    pub const MAX_LIMIT: u32 = 100;

    pub fn new(
        days: u32,
        limit: u32,
        platform: Option<Platform>,
        arch: Option<Arch>,
    ) -> Result<Self, ValidationError> {
        window(days)?;
        if limit == 0 || limit > Self::MAX_LIMIT {
            return Err(ValidationError::new(
                "limit",
                format!("must be 1 to {}", Self::MAX_LIMIT),
            ));
        }
        Ok(Self {
            days,
            limit,
            platform,
            arch,
        })
    }

    /// The first day of the window, for a window ending `today`.
    pub fn first_day(&self, today: NaiveDate) -> NaiveDate {
        first_day(today, self.days)
    }
}

/// Checks a window of days: 1 to [`TopQuery::MAX_DAYS`].
pub fn window(days: u32) -> Result<u32, ValidationError> {
    if days == 0 || days > TopQuery::MAX_DAYS {
        return Err(ValidationError::new(
            "days",
            format!("must be 1 to {}", TopQuery::MAX_DAYS),
        ));
    }
    Ok(days)
}

/// The first day of a window of `days` days ending `today`.
pub fn first_day(today: NaiveDate, days: u32) -> NaiveDate {
    today - chrono::Days::new(u64::from(days.saturating_sub(1)))
}

/// One entry of a top list: a name, or a name and version (every platform and
/// architecture of it together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEntry {
    pub name: PackageName,
    pub version: Option<Version>,
    pub downloads: u64,
    pub bytes: u64,
}

/// The most downloaded names, and names and versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopDownloads {
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub by_name: Vec<TopEntry>,
    pub by_version: Vec<TopEntry>,
}

/// What one package name holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUsage {
    pub name: PackageName,
    pub packages: u64,
    pub active: u64,
    /// Bytes its packages refer to (shared bytes counted in each).
    pub bytes: u64,
    pub yanked_bytes: u64,
}

/// What the registry stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUsage {
    /// Objects holding package bytes: one per distinct content.
    pub objects: u64,
    /// Bytes in those objects.
    pub stored_bytes: u64,
    /// Bytes packages refer to; more than `stored_bytes` by what deduplication saves.
    pub referenced_bytes: u64,
    pub active_packages: u64,
    pub yanked_packages: u64,
    pub yanked_bytes: u64,
    /// Names, most bytes first, at most the asked number.
    pub names: Vec<NameUsage>,
    /// Every name that holds a package.
    pub names_total: u64,
    /// The largest packages, largest first.
    pub largest: Vec<Package>,
}

/// The figures that metrics show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub objects: u64,
    pub stored_bytes: u64,
    pub active_packages: u64,
    pub yanked_packages: u64,
}

closed_set!(
    /// The kinds of retention rule, as policies name them.
    RetentionRuleKind, "rule", {
        KeepNewest => "keep_newest",
        YankedOlderThan => "yanked_older_than",
        NotDownloadedFor => "not_downloaded_for",
    }
);

/// What a retention policy removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionRule {
    /// Keep the newest `versions` versions of each name + platform + architecture (yanked
    /// ones count); delete the older ones.
    KeepNewest { versions: u32 },
    /// Delete packages yanked at least `days` days ago.
    YankedOlderThan { days: u32 },
    /// Delete packages not downloaded for `days` days (never downloaded: uploaded that long
    /// ago).
    NotDownloadedFor { days: u32 },
}

impl RetentionRule {
    pub fn describe(&self) -> String {
        match self {
            Self::KeepNewest { versions } => format!("keep the newest {versions} versions"),
            Self::YankedOlderThan { days } => format!("yanked at least {days} days ago"),
            Self::NotDownloadedFor { days } => format!("not downloaded for {days} days"),
        }
    }
}

/// A rule, applied to the names that match `names` (every name when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub rule: RetentionRule,
    pub names: Vec<NamePattern>,
}

impl RetentionPolicy {
    pub fn new(rule: RetentionRule, names: Vec<NamePattern>) -> Result<Self, ValidationError> {
        match rule {
            RetentionRule::KeepNewest { versions: 0 } => Err(ValidationError::new(
                "versions",
                "must be at least 1 (the newest active version is always kept)",
            )),
            RetentionRule::YankedOlderThan { days: 0 }
            | RetentionRule::NotDownloadedFor { days: 0 } => {
                Err(ValidationError::new("days", "must be at least 1"))
            }
            _ => Ok(Self { rule, names }),
        }
    }

    pub fn applies_to(&self, name: &PackageName) -> bool {
        self.names.is_empty() || self.names.iter().any(|p| p.matches(name))
    }
}

/// A retention policy as configuration files and the API write it:
/// `{ "rule": "keep_newest", "versions": 5, "names": ["otelcol-*"] }`,
/// `{ "rule": "yanked_older_than", "days": 30 }`,
/// `{ "rule": "not_downloaded_for", "days": 180 }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicySpec {
    /// `keep_newest` (needs `versions`), `yanked_older_than` or `not_downloaded_for`
    /// (need `days`).
    #[cfg_attr(feature = "openapi", schema(example = "keep_newest"))]
    pub rule: String,
    /// Versions to keep per name + platform + architecture (`keep_newest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<u32>,
    /// Days (`yanked_older_than`, `not_downloaded_for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// Name patterns (`*` matches any run of characters) the policy is limited to; every
    /// name when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

impl TryFrom<&RetentionPolicySpec> for RetentionPolicy {
    type Error = ValidationError;

    fn try_from(spec: &RetentionPolicySpec) -> Result<Self, ValidationError> {
        let needs = |value: Option<u32>, field: &'static str| {
            value.ok_or_else(|| {
                ValidationError::new(field, format!("rule {} needs {field}", spec.rule))
            })
        };
        let (rule, unused) = match spec.rule.parse::<RetentionRuleKind>()? {
            RetentionRuleKind::KeepNewest => (
                RetentionRule::KeepNewest {
                    versions: needs(spec.versions, "versions")?,
                },
                spec.days.map(|_| "days"),
            ),
            RetentionRuleKind::YankedOlderThan => (
                RetentionRule::YankedOlderThan {
                    days: needs(spec.days, "days")?,
                },
                spec.versions.map(|_| "versions"),
            ),
            RetentionRuleKind::NotDownloadedFor => (
                RetentionRule::NotDownloadedFor {
                    days: needs(spec.days, "days")?,
                },
                spec.versions.map(|_| "versions"),
            ),
        };
        if let Some(field) = unused {
            return Err(ValidationError::new(
                field,
                format!("rule {} does not take {field}", spec.rule),
            ));
        }
        let names = spec
            .names
            .iter()
            .map(|n| NamePattern::parse(n).map_err(|e| ValidationError::new("names", e.message)))
            .collect::<Result<_, _>>()?;
        RetentionPolicy::new(rule, names)
    }
}

/// What retention needs to know of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionCandidate {
    pub id: i64,
    pub name: PackageName,
    pub version: Version,
    pub platform: Platform,
    pub arch: Arch,
    pub file_size: u64,
    /// Packages with the same checksum share one object.
    pub checksum: Checksum,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub yanked_at: Option<DateTime<Utc>>,
    pub last_downloaded_at: Option<DateTime<Utc>>,
}

/// A package a retention run removes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionDeletion {
    pub package: RetentionCandidate,
    /// The first policy (by its place in the list) that selected it.
    pub policy: usize,
    pub reason: String,
}

/// Chooses what `policies` delete among `packages` at `now`. A package is deleted when
/// any policy selects it, except the newest active version of each name + platform +
/// architecture, which is never deleted. Pure: the same inputs give the same list, in the
/// order of `packages` sorted by name, platform, architecture and version (newest first).
pub fn plan_retention(
    policies: &[RetentionPolicy],
    mut packages: Vec<RetentionCandidate>,
    now: DateTime<Utc>,
) -> Vec<RetentionDeletion> {
    packages.sort_by(|a, b| {
        (a.name.as_str(), a.platform.as_str(), a.arch.as_str())
            .cmp(&(b.name.as_str(), b.platform.as_str(), b.arch.as_str()))
            .then_with(|| b.version.precedence(&a.version))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut deletions = Vec::new();
    let mut start = 0;
    while start < packages.len() {
        let first = &packages[start];
        let end = packages[start..]
            .iter()
            .position(|p| {
                p.name != first.name || p.platform != first.platform || p.arch != first.arch
            })
            .map_or(packages.len(), |n| start + n);
        let group = &packages[start..end];
        // Newest first: the first active one is protected.
        let protected = group.iter().position(|p| p.is_active);
        for (rank, package) in group.iter().enumerate() {
            if Some(rank) == protected {
                continue;
            }
            let chosen = policies.iter().enumerate().find_map(|(i, policy)| {
                if !policy.applies_to(&package.name) {
                    return None;
                }
                selects(&policy.rule, package, rank, now).then(|| (i, policy.rule.describe()))
            });
            if let Some((policy, reason)) = chosen {
                deletions.push(RetentionDeletion {
                    package: package.clone(),
                    policy,
                    reason,
                });
            }
        }
        start = end;
    }
    deletions
}

/// Bytes that deleting `deletions` frees in storage: the size of each object that only
/// deleted packages refer to. `all` is every package (deleted or not).
pub fn bytes_freed(deletions: &[RetentionDeletion], all: &[RetentionCandidate]) -> u64 {
    use std::collections::{HashMap, HashSet};
    let deleted: HashSet<i64> = deletions.iter().map(|d| d.package.id).collect();
    let mut kept: HashMap<&str, bool> = HashMap::new();
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for p in all {
        let still_used = kept.entry(p.checksum.as_str()).or_insert(false);
        *still_used |= !deleted.contains(&p.id);
        sizes.insert(p.checksum.as_str(), p.file_size);
    }
    deletions
        .iter()
        .map(|d| d.package.checksum.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .filter(|c| kept.get(c) == Some(&false))
        .map(|c| sizes.get(c).copied().unwrap_or(0))
        .sum()
}

fn selects(rule: &RetentionRule, p: &RetentionCandidate, rank: usize, now: DateTime<Utc>) -> bool {
    let older = |at: DateTime<Utc>, days: u32| now - at >= chrono::Duration::days(i64::from(days));
    match *rule {
        RetentionRule::KeepNewest { versions } => rank >= versions as usize,
        RetentionRule::YankedOlderThan { days } => {
            !p.is_active && p.yanked_at.is_some_and(|at| older(at, days))
        }
        RetentionRule::NotDownloadedFor { days } => {
            older(p.last_downloaded_at.unwrap_or(p.created_at), days)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days_ago: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() - chrono::Duration::days(days_ago)
    }

    fn now() -> DateTime<Utc> {
        at(0)
    }

    fn candidate(id: i64, name: &str, version: &str, active: bool) -> RetentionCandidate {
        RetentionCandidate {
            id,
            name: PackageName::parse(name).unwrap(),
            version: Version::parse(version).unwrap(),
            platform: Platform::Linux,
            arch: Arch::Amd64,
            file_size: 10,
            checksum: Checksum::from_digest(&[id as u8; 32]),
            is_active: active,
            created_at: at(100),
            yanked_at: (!active).then(|| at(50)),
            last_downloaded_at: None,
        }
    }

    fn ids(deletions: &[RetentionDeletion]) -> Vec<i64> {
        let mut ids: Vec<i64> = deletions.iter().map(|d| d.package.id).collect();
        ids.sort_unstable();
        ids
    }

    fn policy(rule: RetentionRule, names: &[&str]) -> RetentionPolicy {
        RetentionPolicy::new(
            rule,
            names
                .iter()
                .map(|n| NamePattern::parse(n).unwrap())
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn keep_newest_keeps_by_precedence_not_by_upload_order() {
        let packages = vec![
            candidate(1, "a", "1.10.0", true),
            candidate(2, "a", "1.9.0", true),
            candidate(3, "a", "1.2.0", true),
            candidate(4, "a", "2.0.0-rc.1", true),
        ];
        let plan = plan_retention(
            &[policy(RetentionRule::KeepNewest { versions: 2 }, &[])],
            packages,
            now(),
        );
        // 2.0.0-rc.1 and 1.10.0 are the newest two.
        assert_eq!(ids(&plan), vec![2, 3]);
    }

    #[test]
    fn the_newest_active_version_is_never_deleted() {
        // The two newest are yanked: keeping two would delete the only active one.
        let packages = vec![
            candidate(1, "a", "3.0.0", false),
            candidate(2, "a", "2.0.0", false),
            candidate(3, "a", "1.0.0", true),
            candidate(4, "a", "0.9.0", true),
        ];
        let plan = plan_retention(
            &[
                policy(RetentionRule::KeepNewest { versions: 1 }, &[]),
                policy(RetentionRule::NotDownloadedFor { days: 1 }, &[]),
            ],
            packages,
            now(),
        );
        assert_eq!(ids(&plan), vec![1, 2, 4]);
    }

    #[test]
    fn groups_are_per_platform_and_arch() {
        let mut arm = candidate(3, "a", "1.0.0", true);
        arm.arch = Arch::Arm64;
        let packages = vec![
            candidate(1, "a", "2.0.0", true),
            candidate(2, "a", "1.0.0", true),
            arm,
        ];
        let plan = plan_retention(
            &[policy(RetentionRule::KeepNewest { versions: 1 }, &[])],
            packages,
            now(),
        );
        assert_eq!(ids(&plan), vec![2]);
    }

    #[test]
    fn yanked_rule_counts_from_the_yank() {
        let mut recent = candidate(2, "a", "1.0.0", false);
        recent.yanked_at = Some(at(3));
        let packages = vec![
            candidate(1, "a", "2.0.0", false),
            recent,
            candidate(3, "a", "0.1.0", true),
        ];
        let plan = plan_retention(
            &[policy(RetentionRule::YankedOlderThan { days: 30 }, &[])],
            packages,
            now(),
        );
        assert_eq!(ids(&plan), vec![1]);
    }

    #[test]
    fn not_downloaded_uses_the_last_download_or_the_upload() {
        let mut fetched = candidate(2, "a", "1.0.0", true);
        fetched.last_downloaded_at = Some(at(5));
        let mut new = candidate(3, "a", "0.5.0", true);
        new.created_at = at(2);
        let packages = vec![
            candidate(1, "a", "2.0.0", true),
            fetched,
            new,
            candidate(4, "a", "0.1.0", true),
        ];
        let plan = plan_retention(
            &[policy(RetentionRule::NotDownloadedFor { days: 30 }, &[])],
            packages,
            now(),
        );
        // 2.0.0 is the newest active; 1.0.0 was fetched 5 days ago; 0.5.0 is 2 days old.
        assert_eq!(ids(&plan), vec![4]);
    }

    #[test]
    fn name_patterns_limit_a_policy_and_the_first_policy_is_the_reason() {
        let packages = vec![
            candidate(1, "otelcol", "2.0.0", true),
            candidate(2, "otelcol", "1.0.0", true),
            candidate(3, "other", "2.0.0", true),
            candidate(4, "other", "1.0.0", true),
        ];
        let plan = plan_retention(
            &[
                policy(RetentionRule::KeepNewest { versions: 1 }, &["otel*"]),
                policy(RetentionRule::NotDownloadedFor { days: 1 }, &[]),
            ],
            packages,
            now(),
        );
        assert_eq!(ids(&plan), vec![2, 4]);
        let reasons: Vec<usize> = plan.iter().map(|d| d.policy).collect();
        assert_eq!(reasons, vec![0, 1]);
    }

    #[test]
    fn shared_bytes_are_freed_only_with_their_last_package() {
        let mut shared_a = candidate(1, "a", "1.0.0", true);
        let mut shared_b = candidate(2, "b", "1.0.0", true);
        shared_b.checksum = shared_a.checksum.clone();
        shared_a.file_size = 100;
        shared_b.file_size = 100;
        let own = candidate(3, "a", "0.5.0", true);
        let all = vec![shared_a.clone(), shared_b.clone(), own.clone()];
        let delete = |ps: &[&RetentionCandidate]| -> Vec<RetentionDeletion> {
            ps.iter()
                .map(|p| RetentionDeletion {
                    package: (*p).clone(),
                    policy: 0,
                    reason: String::new(),
                })
                .collect()
        };
        assert_eq!(bytes_freed(&delete(&[&shared_a, &own]), &all), 10);
        assert_eq!(
            bytes_freed(&delete(&[&shared_a, &shared_b, &own]), &all),
            110
        );
    }

    #[test]
    fn invalid_policies_and_windows_are_refused() {
        assert!(RetentionPolicy::new(RetentionRule::KeepNewest { versions: 0 }, vec![]).is_err());
        assert!(RetentionPolicy::new(RetentionRule::YankedOlderThan { days: 0 }, vec![]).is_err());
        assert!(TopQuery::new(0, 10, None, None).is_err());
        assert!(TopQuery::new(7, 0, None, None).is_err());
        assert!(TopQuery::new(7, 101, None, None).is_err());
        let q = TopQuery::new(7, 10, None, None).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            q.first_day(today),
            NaiveDate::from_ymd_opt(2026, 2, 23).unwrap()
        );
    }
}
