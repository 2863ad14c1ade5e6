//! Download statistics, storage usage and retention runs.

use actix_web::{HttpResponse, web};
use agentpkg_model::{
    Arch, DailyDownloads, ErrorCode, NameUsage, Platform, RetentionDeletion, RetentionPolicy,
    RetentionPolicySpec, TopEntry, TopQuery,
};
use agentpkg_stats::RetentionReport;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::views::PackageView;
use crate::{Admin, ApiError, ApiState, Viewer};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SeriesParams {
    /// Days to show, ending today (UTC), 1 to 3660 (default 30).
    days: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DayView {
    /// A UTC day.
    #[schema(value_type = String, format = Date)]
    day: NaiveDate,
    downloads: u64,
    /// Bytes sent (a redirect counts the package's size).
    bytes: u64,
}

impl From<&DailyDownloads> for DayView {
    fn from(d: &DailyDownloads) -> Self {
        Self {
            day: d.day,
            downloads: d.downloads,
            bytes: d.bytes,
        }
    }
}

/// A package's downloads per day.
#[derive(Serialize, ToSchema)]
pub(crate) struct SeriesView {
    package_id: i64,
    #[schema(value_type = String, format = Date)]
    first_day: NaiveDate,
    #[schema(value_type = String, format = Date)]
    last_day: NaiveDate,
    /// Downloads over the window.
    downloads: u64,
    /// Bytes over the window.
    bytes: u64,
    /// Every day of the window, oldest first, days without downloads as zero.
    days: Vec<DayView>,
    /// Downloads since the package was published.
    download_count: u64,
    last_downloaded_at: Option<DateTime<Utc>>,
}

/// Downloads of a package per day
///
/// Days without downloads are included as zero. Counts reach the database in batches
/// (every `stats.flush_secs`), so the last seconds may not show yet. Needs the viewer
/// role.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{id}/stats",
    tag = "statistics",
    params(("id" = i64, Path, description = "Package id"), SeriesParams),
    responses(
        (status = 200, description = "The daily series", body = SeriesView),
        (status = 400, description = "The id or `days` is invalid", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn package(
    viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let package = state.packages.gate(&viewer.caller).get(*id).await?;
    let series = state
        .stats
        .reports
        .daily(package.id, params.days.unwrap_or(30))
        .await?;
    Ok(HttpResponse::Ok().json(SeriesView {
        package_id: package.id,
        first_day: series.first_day,
        last_day: series.last_day,
        downloads: series.downloads,
        bytes: series.bytes,
        days: series.days.iter().map(DayView::from).collect(),
        download_count: package.download_count,
        last_downloaded_at: package.last_downloaded_at,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TopParams {
    /// Days, ending today (UTC), 1 to 3660 (default 7).
    days: Option<u32>,
    /// Entries per list, 1 to 100 (default 10).
    limit: Option<u32>,
    /// Only downloads of builds for this platform.
    #[param(value_type = Option<Platform>)]
    platform: Option<String>,
    /// Only downloads of builds for this architecture.
    #[param(value_type = Option<Arch>)]
    arch: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TopEntryView {
    name: String,
    /// The version (in the `by_version` list).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    downloads: u64,
    bytes: u64,
}

impl From<&TopEntry> for TopEntryView {
    fn from(e: &TopEntry) -> Self {
        Self {
            name: e.name.to_string(),
            version: e.version.as_ref().map(ToString::to_string),
            downloads: e.downloads,
            bytes: e.bytes,
        }
    }
}

/// The most downloaded packages.
#[derive(Serialize, ToSchema)]
pub(crate) struct TopView {
    #[schema(value_type = String, format = Date)]
    first_day: NaiveDate,
    #[schema(value_type = String, format = Date)]
    last_day: NaiveDate,
    /// Names, most downloaded first (every version, platform and architecture).
    by_name: Vec<TopEntryView>,
    /// Names with versions, most downloaded first (every platform and architecture).
    by_version: Vec<TopEntryView>,
}

/// The most downloaded packages
///
/// By name, and by name and version, over the last `days` UTC days; optionally only the
/// downloads of one platform and/or architecture. A token limited to some names sees only
/// those. Answers are kept for `stats.cache_secs`. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/stats/top",
    tag = "statistics",
    params(TopParams),
    responses(
        (status = 200, description = "The top lists", body = TopView),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
    ),
)]
pub(crate) async fn top(
    viewer: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<TopParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let query = TopQuery::new(
        params.days.unwrap_or(7),
        params.limit.unwrap_or(10),
        params.platform.as_deref().map(str::parse).transpose()?,
        params.arch.as_deref().map(str::parse).transpose()?,
    )?;
    let top = state.stats.reports.top_for(&viewer.caller, query).await?;
    Ok(HttpResponse::Ok().json(TopView {
        first_day: top.first_day,
        last_day: top.last_day,
        by_name: top.by_name.iter().map(Into::into).collect(),
        by_version: top.by_version.iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StorageParams {
    /// Names to list, most bytes first, 0 to 1000 (default 20).
    names: Option<u32>,
    /// Largest packages to list, 0 to 1000 (default 10).
    largest: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct NameUsageView {
    name: String,
    packages: u64,
    active: u64,
    /// Bytes its packages refer to (bytes shared with other packages counted here too).
    bytes: u64,
    yanked_bytes: u64,
}

impl From<&NameUsage> for NameUsageView {
    fn from(n: &NameUsage) -> Self {
        Self {
            name: n.name.to_string(),
            packages: n.packages,
            active: n.active,
            bytes: n.bytes,
            yanked_bytes: n.yanked_bytes,
        }
    }
}

/// What the registry stores.
#[derive(Serialize, ToSchema)]
pub(crate) struct StorageView<'a> {
    /// Objects holding package bytes: one per distinct content.
    objects: u64,
    /// Bytes in those objects.
    stored_bytes: u64,
    /// Bytes that packages refer to.
    referenced_bytes: u64,
    /// What deduplication saves: `referenced_bytes - stored_bytes`.
    deduplicated_bytes: u64,
    active_packages: u64,
    yanked_packages: u64,
    /// Bytes of yanked packages.
    yanked_bytes: u64,
    /// Names holding at least one package.
    names_total: u64,
    /// Names, most bytes first.
    names: Vec<NameUsageView>,
    /// The largest packages, largest first.
    largest: Vec<PackageView<'a>>,
}

/// Storage usage
///
/// Objects and bytes stored, bytes referenced (the difference is what deduplication
/// saves), yanked bytes, the names holding most and the largest packages. A token limited
/// to some names sees the totals and only its names in the lists. Answers are kept for
/// `stats.cache_secs`. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/stats/storage",
    tag = "statistics",
    params(StorageParams),
    responses(
        (status = 200, description = "Storage usage", body = StorageView),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
    ),
)]
pub(crate) async fn storage(
    viewer: Viewer,
    state: web::Data<ApiState>,
    params: web::Query<StorageParams>,
) -> Result<HttpResponse, ApiError> {
    let max = agentpkg_stats::MAX_REPORT_ROWS;
    let names = params.names.unwrap_or(20);
    let largest = params.largest.unwrap_or(10);
    for (value, field) in [(names, "names"), (largest, "largest")] {
        if value > max {
            return Err(
                agentpkg_model::ValidationError::new(field, format!("must be 0 to {max}")).into(),
            );
        }
    }
    let usage = state
        .stats
        .reports
        .storage_for(&viewer.caller, names, largest)
        .await?;
    Ok(HttpResponse::Ok().json(StorageView {
        objects: usage.objects,
        stored_bytes: usage.stored_bytes,
        referenced_bytes: usage.referenced_bytes,
        deduplicated_bytes: usage.referenced_bytes.saturating_sub(usage.stored_bytes),
        active_packages: usage.active_packages,
        yanked_packages: usage.yanked_packages,
        yanked_bytes: usage.yanked_bytes,
        names_total: usage.names_total,
        names: usage.names.iter().map(Into::into).collect(),
        largest: usage.largest.iter().map(PackageView::from).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunParams {
    /// List what would be deleted, and delete nothing (default false).
    #[serde(default)]
    dry_run: bool,
}

/// Policies to apply instead of the configured ones.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunBody {
    policies: Vec<RetentionPolicySpec>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DeletionView {
    id: i64,
    name: String,
    version: String,
    platform: Platform,
    arch: Arch,
    file_size: u64,
    is_active: bool,
    /// The index of the first policy that selected it.
    policy: usize,
    reason: String,
}

impl From<&RetentionDeletion> for DeletionView {
    fn from(d: &RetentionDeletion) -> Self {
        let p = &d.package;
        Self {
            id: p.id,
            name: p.name.to_string(),
            version: p.version.to_string(),
            platform: p.platform,
            arch: p.arch,
            file_size: p.file_size,
            is_active: p.is_active,
            policy: d.policy,
            reason: d.reason.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SkippedView {
    id: i64,
    reason: String,
}

/// What a retention run chose or did.
#[derive(Serialize, ToSchema)]
pub(crate) struct RetentionView {
    dry_run: bool,
    /// The policies applied.
    policies: Vec<RetentionPolicySpec>,
    /// What would go (dry run) or went: by name, platform, architecture, newest first.
    deletions: Vec<DeletionView>,
    /// Sum of their sizes.
    bytes_referenced: u64,
    /// Bytes storage gets back: objects no remaining package shares.
    bytes_freed: u64,
    /// Chosen but not deleted (deleted meanwhile, or the delete failed).
    skipped: Vec<SkippedView>,
}

/// Run retention policies
///
/// Applies the configured policies (`[[retention.policies]]`), or those in the body.
/// Never deletes the newest active version of a name + platform + architecture. With
/// `dry_run=true` it lists exactly what a run would delete now, and the bytes freed;
/// otherwise it deletes them through the normal delete (shared bytes stay while a package
/// refers to them), each in the audit log. Needs the admin role.
#[utoipa::path(
    post,
    path = "/api/v1/retention/run",
    tag = "retention",
    params(RunParams),
    request_body(content = Option<RunBody>, description = "Policies to apply instead of the configured ones", content_type = "application/json"),
    responses(
        (status = 200, description = "What was (or would be) deleted", body = RetentionView),
        (status = 400, description = "An invalid policy", body = ErrorBody),
    ),
)]
pub(crate) async fn run(
    admin: Admin,
    state: web::Data<ApiState>,
    params: web::Query<RunParams>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // NOTE: parsed here rather than by an optional extractor, which would take a body it
    // cannot read for no body, and apply the configured policies instead.
    let body: Option<RunBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {e}"))
        })?)
    };
    let (specs, policies): (Vec<RetentionPolicySpec>, Vec<RetentionPolicy>) = match body {
        Some(body) => {
            let specs = body.policies;
            let policies = specs
                .iter()
                .map(RetentionPolicy::try_from)
                .collect::<Result<_, _>>()?;
            (specs, policies)
        }
        None => (
            state.stats.policies.iter().map(spec_of).collect(),
            state.stats.policies.as_ref().clone(),
        ),
    };
    let report: RetentionReport = state
        .stats
        .retention
        .run_for(&admin.caller, &policies, params.dry_run)
        .await?;
    Ok(HttpResponse::Ok().json(RetentionView {
        dry_run: report.dry_run,
        policies: specs,
        deletions: report.deletions.iter().map(Into::into).collect(),
        bytes_referenced: report.bytes_referenced,
        bytes_freed: report.bytes_freed,
        skipped: report
            .skipped
            .into_iter()
            .map(|(id, reason)| SkippedView { id, reason })
            .collect(),
    }))
}

/// A policy as configuration writes it.
pub(crate) fn spec_of(policy: &RetentionPolicy) -> RetentionPolicySpec {
    use agentpkg_model::RetentionRule;
    let (rule, versions, days) = match policy.rule {
        RetentionRule::KeepNewest { versions } => ("keep_newest", Some(versions), None),
        RetentionRule::YankedOlderThan { days } => ("yanked_older_than", None, Some(days)),
        RetentionRule::NotDownloadedFor { days } => ("not_downloaded_for", None, Some(days)),
    };
    RetentionPolicySpec {
        rule: rule.to_owned(),
        versions,
        days,
        names: policy.names.iter().map(|n| n.as_str().to_owned()).collect(),
    }
}
