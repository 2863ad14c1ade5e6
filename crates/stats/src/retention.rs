//! Retention: which packages the policies remove, and removing them through the package
//! manager's delete (so bytes that another package shares stay), each deletion logged
//! and audited.

use agentpkg_model::{
    AuditAction, LatestQuery, NameScope, NewAuditEvent, RetentionDeletion, RetentionPolicy, Role,
    bytes_freed, plan_retention,
};
use agentpkg_packagemgr::{AuditLog, Caller, Error, PackageManager};
use agentpkg_store::DynStatsStore;
use chrono::Utc;

/// What a retention run chose, and for a real run what it deleted.
#[derive(Debug, Clone)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// What the policies select (a dry run) or what was deleted (a real run), by name,
    /// platform, architecture and version, newest first.
    pub deletions: Vec<RetentionDeletion>,
    /// Sum of the deleted packages' sizes.
    pub bytes_referenced: u64,
    /// Bytes storage gives back: objects that no remaining package shares.
    pub bytes_freed: u64,
    /// Packages chosen but not deleted: gone meanwhile, or the delete failed (id, why).
    pub skipped: Vec<(i64, String)>,
}

/// Runs retention policies.
#[derive(Clone)]
pub struct Retention {
    store: DynStatsStore,
    packages: PackageManager,
    audit: AuditLog,
}

impl Retention {
    pub fn new(store: DynStatsStore, packages: PackageManager, audit: AuditLog) -> Self {
        Self {
            store,
            packages,
            audit,
        }
    }

    /// Applies `policies` now for `caller` (an admin), to the names its credential
    /// reaches: [`Retention::run`], with the run itself recorded (`retention_run`, done
    /// or refused) beside each deletion.
    pub async fn run_for(
        &self,
        caller: &Caller,
        policies: &[RetentionPolicy],
        dry_run: bool,
    ) -> Result<RetentionReport, Error> {
        let result = match caller.require(Role::Admin) {
            Ok(()) => {
                let by = caller.event(AuditAction::Delete);
                self.run(policies, &caller.credential.names, dry_run, &by)
                    .await
            }
            Err(e) => Err(e),
        };
        let mut event = caller.event(AuditAction::RetentionRun);
        match &result {
            Ok(report) => {
                event.detail = format!(
                    "{} {} package(s), {} byte(s) freed{}",
                    if dry_run { "would delete" } else { "deleted" },
                    report.deletions.len(),
                    report.bytes_freed,
                    if report.skipped.is_empty() {
                        String::new()
                    } else {
                        format!(", {} skipped", report.skipped.len())
                    }
                );
                self.audit.record(event).await;
            }
            Err(Error::Forbidden(reason)) => self.audit.record(event.refused(reason)).await,
            Err(_) => {}
        }
        result
    }

    /// Applies `policies` now, to the names `names` allows. A dry run deletes nothing and reports what a real run would
    /// delete at this moment. Each deletion is audited as `by` (a `delete` event: who
    /// asked, from where), with the package and the policy's reason.
    pub async fn run(
        &self,
        policies: &[RetentionPolicy],
        names: &NameScope,
        dry_run: bool,
        by: &NewAuditEvent,
    ) -> Result<RetentionReport, Error> {
        let all = self.store.retention_candidates().await?;
        // A credential limited to some names applies policies to those names only (a
        // name's versions are one group, so the plan is the same for them).
        let in_reach = all
            .iter()
            .filter(|c| names.allows(&c.name))
            .cloned()
            .collect();
        let planned = plan_retention(policies, in_reach, Utc::now());
        if dry_run {
            return Ok(RetentionReport {
                dry_run,
                bytes_referenced: planned.iter().map(|d| d.package.file_size).sum(),
                bytes_freed: bytes_freed(&planned, &all),
                deletions: planned,
                skipped: Vec::new(),
            });
        }
        let mut deleted = Vec::with_capacity(planned.len());
        let mut skipped = Vec::new();
        for deletion in planned {
            let p = &deletion.package;
            // The plan is a moment old: a yank since may have made this package its group's
            // newest active version, which no policy deletes.
            let newest = self
                .packages
                .latest(&LatestQuery {
                    name: p.name.clone(),
                    platform: p.platform,
                    arch: p.arch,
                    requirement: None,
                    include_prerelease: true,
                })
                .await;
            match newest {
                Ok(newest) if newest.id == p.id => {
                    skipped.push((p.id, "now the newest active version".to_owned()));
                    continue;
                }
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => {
                    skipped.push((p.id, e.to_string()));
                    continue;
                }
            }
            match self.packages.delete(p.id).await {
                Ok(_) => {
                    tracing::info!(
                        package_id = p.id,
                        name = %p.name,
                        version = %p.version,
                        platform = %p.platform.as_str(),
                        arch = %p.arch.as_str(),
                        bytes = p.file_size,
                        reason = %deletion.reason,
                        "retention deleted a package"
                    );
                    let mut event = by.clone();
                    event.action = AuditAction::Delete;
                    event.package = Some(p.name.to_string());
                    event.package_id = Some(p.id);
                    event.detail = format!(
                        "{} {}/{} sha256:{} by retention policy {} ({})",
                        p.version,
                        p.platform.as_str(),
                        p.arch.as_str(),
                        p.checksum,
                        deletion.policy,
                        deletion.reason
                    );
                    self.audit.record(event).await;
                    deleted.push(deletion);
                }
                Err(Error::NotFound(_)) => skipped.push((p.id, "already deleted".to_owned())),
                Err(e) => {
                    tracing::warn!(package_id = p.id, error = %e, "retention could not delete a package");
                    skipped.push((p.id, e.to_string()));
                }
            }
        }
        Ok(RetentionReport {
            dry_run,
            bytes_referenced: deleted.iter().map(|d| d.package.file_size).sum(),
            bytes_freed: bytes_freed(&deleted, &all),
            deletions: deleted,
            skipped,
        })
    }

    /// Runs `policies` every `every` (the first run one interval after start) until the
    /// task is aborted. Replicas may all run it: a package deleted twice is skipped.
    pub fn spawn_periodic(
        &self,
        policies: Vec<RetentionPolicy>,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let retention = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let mut by = NewAuditEvent::new(AuditAction::Delete);
                by.actor = Some("retention (periodic)".to_owned());
                match retention.run(&policies, &NameScope::All, false, &by).await {
                    Ok(report) => tracing::info!(
                        deleted = report.deletions.len(),
                        bytes_freed = report.bytes_freed,
                        skipped = report.skipped.len(),
                        "retention run"
                    ),
                    Err(e) => tracing::warn!(error = %e, "retention run failed; will retry"),
                }
            }
        })
    }
}
