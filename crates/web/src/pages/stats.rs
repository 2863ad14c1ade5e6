//! Statistics: the most downloaded names and versions over 7, 30 or 90 days (by platform and
//! architecture), and what storage holds (stored against referenced bytes, yanked bytes, the
//! names holding most and the largest packages) — as the credential may see them, through
//! the same reports as `GET /api/v1/stats/…`.

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;
use agentpkg_model::{Arch, Platform, Role, TopEntry, TopQuery};
use askama::Template;
use serde::Deserialize;

use super::{CsrfForm, Layout, page};
use crate::WebState;
use crate::chart::Chart;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

/// The windows offered.
const WINDOWS: [u32; 3] = [7, 30, 90];
const ROWS: u32 = 10;

#[derive(Deserialize, Default)]
pub struct StatsQuery {
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    arch: String,
}

struct TopRow {
    name: String,
    version: String,
    downloads: u64,
    size: String,
}

impl TopRow {
    fn of(e: &TopEntry) -> Self {
        Self {
            name: e.name.to_string(),
            version: e
                .version
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            downloads: e.downloads,
            size: format::size(e.bytes),
        }
    }
}

struct UsageRow {
    name: String,
    packages: u64,
    size: String,
    yanked: String,
}

struct LargestRow {
    href: String,
    label: String,
    size: String,
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    layout: Layout,
    days: u32,
    windows: [u32; 3],
    platform: String,
    arch: String,
    platforms: Vec<&'static str>,
    arches: Vec<&'static str>,
    first_day: String,
    last_day: String,
    by_name: Vec<TopRow>,
    by_version: Vec<TopRow>,
    chart: Chart,
    stored: String,
    referenced: String,
    saved: String,
    objects: u64,
    active: u64,
    yanked_packages: u64,
    yanked: String,
    names: Vec<UsageRow>,
    names_total: u64,
    largest: Vec<LargestRow>,
}

pub async fn statistics(
    who: SignedIn,
    state: web::Data<WebState>,
    query: web::Query<StatsQuery>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let stats = state
        .stats
        .as_ref()
        .ok_or_else(|| WebError::NotFound("this registry keeps no statistics".into()))?;
    let days = query.days.unwrap_or(WINDOWS[0]);
    let platform = match query.platform.as_str() {
        "" => None,
        p => Some(p.parse::<Platform>()?),
    };
    let arch = match query.arch.as_str() {
        "" => None,
        a => Some(a.parse::<Arch>()?),
    };
    let caller = who.caller();
    let top = stats
        .top_for(&caller, TopQuery::new(days, ROWS, platform, arch)?)
        .await?;
    let usage = stats.storage_for(&caller, ROWS, ROWS).await?;
    let chart = Chart::bars(
        &top.by_name
            .iter()
            .map(|e| (e.name.to_string(), e.downloads))
            .collect::<Vec<_>>(),
        "download",
        "names",
    );
    page(&StatsPage {
        layout: Layout::of("Statistics", &who),
        days,
        windows: WINDOWS,
        platform: query.platform.clone(),
        arch: query.arch.clone(),
        platforms: Platform::ALL.iter().map(|p| p.as_str()).collect(),
        arches: Arch::ALL.iter().map(|a| a.as_str()).collect(),
        first_day: top.first_day.to_string(),
        last_day: top.last_day.to_string(),
        by_name: top.by_name.iter().map(TopRow::of).collect(),
        by_version: top.by_version.iter().map(TopRow::of).collect(),
        chart,
        stored: format::size(usage.stored_bytes),
        referenced: format::size(usage.referenced_bytes),
        saved: format::size(usage.referenced_bytes.saturating_sub(usage.stored_bytes)),
        objects: usage.objects,
        active: usage.active_packages,
        yanked_packages: usage.yanked_packages,
        yanked: format::size(usage.yanked_bytes),
        names: usage
            .names
            .iter()
            .map(|n| UsageRow {
                name: n.name.to_string(),
                packages: n.packages,
                size: format::size(n.bytes),
                yanked: format::size(n.yanked_bytes),
            })
            .collect(),
        names_total: usage.names_total,
        largest: usage
            .largest
            .iter()
            .map(|p| LargestRow {
                href: format!(
                    "/packages/{}/{}/{}/{}",
                    p.name,
                    p.version,
                    p.platform.as_str(),
                    p.arch.as_str()
                ),
                label: format!("{} {} {}/{}", p.name, p.version, p.platform, p.arch),
                size: format::size(p.file_size),
            })
            .collect(),
    })
}

struct DeletionRow {
    label: String,
    href: String,
    size: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "retention.html")]
struct RetentionPage {
    layout: Layout,
    /// The policies, in words.
    policies: Vec<String>,
    dry_run: bool,
    deletions: Vec<DeletionRow>,
    referenced: String,
    freed: String,
    skipped: Vec<String>,
}

fn retention_of(
    state: &WebState,
) -> Result<
    &(
        agentpkg_stats::Retention,
        std::sync::Arc<Vec<agentpkg_model::RetentionPolicy>>,
    ),
    WebError,
> {
    state
        .retention
        .as_ref()
        .ok_or_else(|| WebError::NotFound("this registry applies no retention".into()))
}

fn retention_page(
    who: &SignedIn,
    policies: &[agentpkg_model::RetentionPolicy],
    report: agentpkg_stats::RetentionReport,
) -> Result<HttpResponse, WebError> {
    page(&RetentionPage {
        layout: Layout::of("Retention", who),
        policies: policies
            .iter()
            .map(|p| {
                let names: Vec<&str> = p.names.iter().map(|n| n.as_str()).collect();
                if names.is_empty() {
                    format!("{}, every name", p.rule.describe())
                } else {
                    format!("{}, names {}", p.rule.describe(), names.join(", "))
                }
            })
            .collect(),
        dry_run: report.dry_run,
        deletions: report
            .deletions
            .iter()
            .map(|d| {
                let c = &d.package;
                DeletionRow {
                    label: format!("{} {} {}/{}", c.name, c.version, c.platform, c.arch),
                    href: format!(
                        "/packages/{}/{}/{}/{}",
                        c.name,
                        c.version,
                        c.platform.as_str(),
                        c.arch.as_str()
                    ),
                    size: format::size(c.file_size),
                    reason: d.reason.clone(),
                }
            })
            .collect(),
        referenced: format::size(report.bytes_referenced),
        freed: format::size(report.bytes_freed),
        skipped: report
            .skipped
            .iter()
            .map(|(id, why)| format!("package {id}: {why}"))
            .collect(),
    })
}

/// What the configured retention policies would delete now (admins): a dry run, with the
/// button that runs them.
pub async fn retention(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Admin)?;
    let (retention, policies) = retention_of(&state)?;
    let report = retention
        .run_for(&ctx.caller(&who.credential), policies, true)
        .await?;
    retention_page(&who, policies, report)
}

/// Applies the configured policies now (admins; audited like the API's run), and shows
/// what was deleted.
pub async fn run_retention(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let (retention, policies) = retention_of(&state)?;
    let report = retention
        .run_for(&ctx.caller(&who.credential), policies, false)
        .await?;
    retention_page(&who, policies, report)
}
