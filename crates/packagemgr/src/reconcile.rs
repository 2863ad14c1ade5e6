//! Reconciliation: the bucket and the table agree, or an operator hears why not.
//!
//! Every failure path deletes what it stored, but a process killed between storing an
//! upload's bytes and committing its row (SIGKILL, power loss) cannot. Such objects are
//! orphans: no blob row names them. Reconciliation deletes orphans older than a grace
//! period — younger ones may belong to an upload that is committing right now — and reports
//! the opposite, worse case: rows whose object is missing, which it never "fixes" by itself.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use agentpkg_model::ObjectKey;
use serde::Serialize;

use crate::{Error, PackageManager};

/// What a reconciliation pass found and did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    pub dry_run: bool,
    /// Unreferenced objects older than the grace period: deleted (or, on a dry run, to be).
    pub orphans_removed: Vec<String>,
    /// Unreferenced objects younger than the grace period: left for a later pass.
    pub orphans_in_grace: Vec<String>,
    /// Objects the registry did not name (another tenant of the bucket?): never touched.
    pub foreign_objects: Vec<String>,
    /// Objects that packages refer to but storage does not have.
    pub missing_objects: Vec<MissingObject>,
    /// Orphans whose deletion failed (logged with their key).
    pub delete_failures: Vec<String>,
    /// Leftovers of writes that never finished (a killed process), older than the grace
    /// period: removed (or, on a dry run, to be).
    pub incomplete_removed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MissingObject {
    pub key: String,
    pub package_ids: Vec<i64>,
}

impl PackageManager {
    /// One reconciliation pass. Objects are listed before the table is read, so an upload
    /// that commits in between is seen as referenced, never as an orphan.
    pub async fn reconcile(
        &self,
        grace: Duration,
        dry_run: bool,
    ) -> Result<ReconcileReport, Error> {
        let objects = self.storage.list_objects().await?;
        let referenced: HashSet<String> = self.store.blob_keys().await?.into_iter().collect();
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = ReconcileReport {
            dry_run,
            ..ReconcileReport::default()
        };
        let mut present = HashSet::new();
        for object in objects {
            present.insert(object.key.clone());
            if referenced.contains(&object.key) {
                continue;
            }
            let Ok(key) = ObjectKey::parse(&object.key) else {
                report.foreign_objects.push(object.key);
                continue;
            };
            if object.last_modified > cutoff {
                report.orphans_in_grace.push(object.key);
                continue;
            }
            if !dry_run && let Err(e) = self.storage.delete(&key).await {
                tracing::error!(object_key = %key, error = %e, "could not delete orphaned object");
                report.delete_failures.push(object.key);
                continue;
            }
            if !dry_run {
                self.metrics.orphans_removed.inc();
            }
            tracing::warn!(object_key = %key, dry_run, "orphaned object removed");
            report.orphans_removed.push(object.key);
        }
        report.incomplete_removed = self.storage.sweep_incomplete(cutoff, dry_run).await?;
        if !report.incomplete_removed.is_empty() {
            tracing::warn!(
                count = report.incomplete_removed.len(),
                dry_run,
                "unfinished writes removed"
            );
        }
        for key in referenced.difference(&present) {
            // A listing may lag behind a write that just finished (eventually consistent
            // stores): ask for the object itself before calling it missing.
            if let Ok(object) = ObjectKey::parse(key)
                && self.storage.exists(&object).await?
            {
                continue;
            }
            let package_ids = self.store.packages_with_object(key).await?;
            tracing::error!(object_key = %key, ?package_ids, "packages refer to an object that storage does not have");
            report.missing_objects.push(MissingObject {
                key: key.clone(),
                package_ids,
            });
        }
        for list in [
            &mut report.orphans_removed,
            &mut report.orphans_in_grace,
            &mut report.foreign_objects,
            &mut report.delete_failures,
        ] {
            list.sort();
        }
        report.missing_objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(report)
    }
}
