//! Reconciliation: the bucket and the table agree, or an operator hears why not.
//!
//! Every failure path deletes what it stored, but a process killed between storing an
//! upload's bytes and committing its row (SIGKILL, power loss) cannot. Such objects are
//! orphans: no blob row names them. Every upload is marked in flight in the database from
//! before its first byte until its row commits, and touches its marker while it works, so
//! reconciliation never deletes an object whose marker is fresh, however slow the upload or
//! its commit; markers and their ages are read by the database's clock. A marker left
//! untouched for `stale_uploads` belonged to a process that died: its object goes (unless a
//! row names it). An object without a marker (a spare copy whose delete failed, or written
//! by a version without markers) goes once older than the grace period. Just before each
//! delete, the database is asked again. Reconciliation also reports the opposite, worse
//! case: rows whose object is missing, which it never "fixes" by itself.

use std::collections::{HashMap, HashSet};
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
    /// Objects of uploads in flight (their marker is fresh): never touched.
    pub uploads_in_flight: Vec<String>,
    /// Objects the registry did not name (another tenant of the bucket?): never touched.
    pub foreign_objects: Vec<String>,
    /// Objects that packages refer to but storage does not have.
    pub missing_objects: Vec<MissingObject>,
    /// Orphans whose deletion failed (logged with their key).
    pub delete_failures: Vec<String>,
    /// Leftovers of writes that never finished (a killed process), older than the grace
    /// period: removed (or, on a dry run, to be).
    pub incomplete_removed: Vec<String>,
    /// Resumable uploads idle past their expiry: removed with everything they stored (or,
    /// on a dry run, to be).
    pub sessions_expired: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MissingObject {
    pub key: String,
    pub package_ids: Vec<i64>,
}

/// How a reconciliation pass judges age.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    /// Objects without an in-flight marker are left alone until this old.
    pub grace: Duration,
    /// A marker untouched for this long belongs to an upload that is gone.
    pub stale_uploads: Duration,
    pub dry_run: bool,
    /// The local clock, for the grace period of unmarked objects (injectable for tests of
    /// skew; markers are judged by the database's clock).
    pub now: SystemTime,
}

impl PackageManager {
    /// One reconciliation pass with the configured staleness and the local clock.
    pub async fn reconcile(
        &self,
        grace: Duration,
        dry_run: bool,
    ) -> Result<ReconcileReport, Error> {
        self.reconcile_with(ReconcileOptions {
            grace,
            stale_uploads: self.config().stale_upload_after,
            dry_run,
            now: SystemTime::now(),
        })
        .await
    }

    /// One reconciliation pass. Objects are listed before the markers and the table are
    /// read, in that order, so an upload that starts or commits in between is seen as in
    /// flight or referenced, never as an orphan.
    pub async fn reconcile_with(
        &self,
        options: ReconcileOptions,
    ) -> Result<ReconcileReport, Error> {
        let ReconcileOptions {
            grace,
            stale_uploads,
            dry_run,
            now,
        } = options;
        // Expired direct uploads are forgotten first: their objects, if any arrived, are
        // then ordinary orphans below.
        if !dry_run && let Some(direct) = &self.direct {
            let expired = direct.store.remove_expired_direct_uploads().await?;
            if !expired.is_empty() {
                tracing::info!(count = expired.len(), "expired direct uploads forgotten");
            }
        }
        // Expired resumable uploads go with their multipart writes, tails and objects.
        let mut sessions_expired = Vec::new();
        if let Some(resumable) = &self.resumable {
            for session in resumable.store.expired_sessions().await? {
                sessions_expired.push(format!(
                    "upload {} ({} of {} bytes{})",
                    session.id,
                    session.progress.offset,
                    session.length,
                    if session.progress.package_id.is_some() {
                        ", published"
                    } else {
                        ""
                    }
                ));
                if !dry_run && resumable.store.delete_expired_session(&session.id).await? {
                    self.remove_session_objects(&session).await;
                }
            }
            if !sessions_expired.is_empty() {
                tracing::info!(
                    count = sessions_expired.len(),
                    dry_run,
                    "expired resumable uploads removed"
                );
            }
        }
        let objects = self.storage.list_objects().await?;
        let markers: HashMap<String, Duration> = self
            .store
            .uploads_in_flight()
            .await?
            .into_iter()
            .map(|m| (m.key, m.idle))
            .collect();
        let referenced: HashSet<String> = self.store.blob_keys().await?.into_iter().collect();
        let fresh: HashSet<String> = markers
            .iter()
            .filter(|(_, idle)| **idle < stale_uploads)
            .map(|(key, _)| key.clone())
            .collect();
        let cutoff = now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = ReconcileReport {
            dry_run,
            sessions_expired,
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
            if fresh.contains(&object.key) {
                report.uploads_in_flight.push(object.key);
                continue;
            }
            let marked = markers.contains_key(&object.key);
            if !marked && object.last_modified > cutoff {
                report.orphans_in_grace.push(object.key);
                continue;
            }
            // Asked again just before the delete: an upload may have committed, or touched
            // its marker, since the lists were read.
            if self
                .store
                .object_in_use(key.as_str(), stale_uploads)
                .await?
            {
                report.uploads_in_flight.push(object.key);
                continue;
            }
            if !dry_run && let Err(e) = self.storage.delete(&key).await {
                tracing::error!(object_key = %key, error = %e, "could not delete orphaned object");
                report.delete_failures.push(object.key);
                continue;
            }
            if !dry_run {
                self.metrics.orphans_removed.inc();
                if marked {
                    self.store.end_upload(&key).await?;
                }
            }
            tracing::warn!(object_key = %key, dry_run, abandoned_upload = marked, "orphaned object removed");
            report.orphans_removed.push(object.key);
        }
        // Stale markers of uploads that left no object: nothing to delete but the marker.
        if !dry_run {
            for (key, idle) in &markers {
                if *idle >= stale_uploads
                    && !present.contains(key)
                    && let Ok(key) = ObjectKey::parse(key)
                    && !self
                        .store
                        .object_in_use(key.as_str(), stale_uploads)
                        .await?
                {
                    self.store.end_upload(&key).await?;
                }
            }
        }
        // Unfinished writes are listed before the markers are read again: a write listed
        // here began after its marker, so an upload in flight is always seen as one.
        let incomplete = self.storage.list_incomplete(cutoff).await?;
        if !incomplete.is_empty() {
            let fresh: HashSet<String> = self
                .store
                .uploads_in_flight()
                .await?
                .into_iter()
                .filter(|m| m.idle < stale_uploads)
                .map(|m| m.key)
                .collect();
            for write in incomplete {
                if write.key.as_ref().is_some_and(|k| fresh.contains(k)) {
                    continue;
                }
                if !dry_run {
                    self.storage.remove_incomplete(&write).await?;
                }
                report.incomplete_removed.push(write.description);
            }
        }
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
            &mut report.uploads_in_flight,
            &mut report.foreign_objects,
            &mut report.delete_failures,
            &mut report.sessions_expired,
        ] {
            list.sort();
        }
        report.missing_objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(report)
    }
}
