//! The package list, a name's versions, one package.

use crate::WebState;
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::{
    Activity, Arch, Coordinates, ListFrom, ListQuery, NameScope, Package, PackageName, PageRequest,
    Platform, Role, Version,
};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::{DoneParam, Layout, Row, notice, page};
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

#[derive(Template)]
#[template(path = "packages.html")]
struct PackagesPage {
    layout: Layout,
    rows: Vec<Row>,
    q: String,
    platform: String,
    arch: String,
    yanked: bool,
    platforms: Vec<&'static str>,
    arches: Vec<&'static str>,
    total: u64,
    first: Option<String>,
    prev: Option<String>,
    next: Option<String>,
    last: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ListParams {
    q: Option<String>,
    platform: Option<String>,
    arch: Option<String>,
    yanked: Option<String>,
    page: Option<u32>,
    /// The page after this package (`name/version/platform/arch`) in the list's order.
    after: Option<String>,
    /// The page before this package.
    before: Option<String>,
    /// The last page.
    last: Option<String>,
    done: Option<String>,
}

pub async fn packages(
    who: SignedIn,
    state: web::Data<WebState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, WebError> {
    const PER_PAGE: u32 = 25;
    let q = params.q.clone().unwrap_or_default().trim().to_lowercase();
    let platform = params.platform.clone().unwrap_or_default();
    let arch = params.arch.clone().unwrap_or_default();
    let yanked = params.yanked.as_deref() == Some("on");
    let page_no = params.page.unwrap_or(1).max(1);
    let cursor = |text: &Option<String>| {
        text.as_deref()
            .filter(|t| !t.is_empty())
            .map(Coordinates::parse_path)
            .transpose()
    };
    // Pages are found by place (after or before a package), not by number: as cheap at
    // the end of 100 000 packages as at the start. One row more than shown says whether
    // there is more in the direction read.
    let from = if let Some(c) = cursor(&params.after)? {
        ListFrom::After(c)
    } else if let Some(c) = cursor(&params.before)? {
        ListFrom::Before(c)
    } else if params.last.is_some() {
        ListFrom::End
    } else {
        ListFrom::Number
    };
    let query = ListQuery {
        name: None,
        name_contains: (!q.is_empty()).then(|| q.clone()),
        platform: (!platform.is_empty())
            .then(|| platform.parse::<Platform>())
            .transpose()?,
        arch: (!arch.is_empty())
            .then(|| arch.parse::<Arch>())
            .transpose()?,
        activity: if yanked {
            Activity::All
        } else {
            Activity::ActiveOnly
        },
        names: NameScope::All,
        // By number, the total says whether more follows.
        page: PageRequest::new(
            Some(page_no),
            Some(if from == ListFrom::Number {
                PER_PAGE
            } else {
                PER_PAGE + 1
            }),
        ),
        from: from.clone(),
    };
    let found = state.packages.gate(&who.caller()).list(&query).await?;
    let mut items = found.items;
    let more = items.len() > PER_PAGE as usize;
    let (earlier, later) = match &from {
        ListFrom::Number => (
            page_no > 1,
            u64::from(page_no) * u64::from(PER_PAGE) < found.total,
        ),
        ListFrom::After(_) => {
            items.truncate(PER_PAGE as usize);
            (true, more)
        }
        ListFrom::Before(_) | ListFrom::End => {
            if more {
                items.remove(0);
            }
            (more, matches!(from, ListFrom::Before(_)))
        }
    };
    let link = |pair: Option<(&str, String)>| {
        let mut pairs: Vec<(&str, String)> = pair.into_iter().collect();
        for (k, v) in [("q", &q), ("platform", &platform), ("arch", &arch)] {
            if !v.is_empty() {
                pairs.push((k, v.clone()));
            }
        }
        if yanked {
            pairs.push(("yanked", "on".into()));
        }
        format!(
            "/packages?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    };
    let place = |p: Option<&Package>| p.map(|p| p.coordinates().to_path());
    page(&PackagesPage {
        layout: Layout::of("Packages", &who),
        first: earlier.then(|| link(None)),
        prev: place(items.first())
            .filter(|_| earlier)
            .map(|c| link(Some(("before", c)))),
        next: place(items.last())
            .filter(|_| later)
            .map(|c| link(Some(("after", c)))),
        last: later.then(|| link(Some(("last", "on".into())))),
        rows: items.iter().map(Row::of).collect(),
        q,
        platform,
        arch,
        yanked,
        platforms: Platform::ALL.iter().map(|p| p.as_str()).collect(),
        arches: Arch::ALL.iter().map(|a| a.as_str()).collect(),
        total: found.total,
        notice: notice(params.done.as_deref()),
    })
}

#[derive(Template)]
#[template(path = "name.html")]
struct NamePage {
    layout: Layout,
    name: String,
    /// (user or team name, whether a team).
    owners: Vec<(String, bool)>,
    may_change_owners: bool,
    /// platform/arch columns present.
    columns: Vec<(&'static str, &'static str)>,
    /// version, pre-release, and one cell per column.
    versions: Vec<(String, bool, Vec<Option<Row>>)>,
}

pub async fn name(
    who: SignedIn,
    state: web::Data<WebState>,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let name = PackageName::parse(&path)?;
    let history = state.packages.gate(&who.caller()).history(&name).await?;
    if history.is_empty() {
        return Err(WebError::NotFound(format!("no package named {name}")));
    }
    let mut columns: Vec<(&'static str, &'static str)> = history
        .iter()
        .flat_map(|v| v.packages.iter())
        .map(|p| (p.platform.as_str(), p.arch.as_str()))
        .collect();
    columns.sort_unstable();
    columns.dedup();
    let versions = history
        .iter()
        .map(|v| {
            let cells = columns
                .iter()
                .map(|(platform, arch)| {
                    v.packages
                        .iter()
                        .find(|p| p.platform.as_str() == *platform && p.arch.as_str() == *arch)
                        .map(Row::of)
                })
                .collect();
            (
                v.version.to_string(),
                !v.version.as_semver().pre.is_empty(),
                cells,
            )
        })
        .collect();
    let owners = state
        .packages
        .gate(&who.caller())
        .owners(&name)
        .await?
        .into_iter()
        .map(|o| match o {
            agentpkg_packagemgr::Owner::User { username, .. } => (username, false),
            agentpkg_packagemgr::Owner::Team { name, .. } => (name, true),
        })
        .collect();
    page(&NamePage {
        layout: Layout::of(name.to_string(), &who),
        name: name.to_string(),
        owners,
        may_change_owners: who.caller().permits(agentpkg_model::Role::Publisher, &name),
        columns,
        versions,
    })
}

#[derive(Template)]
#[template(path = "package.html")]
struct PackagePage {
    layout: Layout,
    p: Row,
    sha256: String,
    filename: String,
    description: String,
    signature: Option<String>,
    downloads: u64,
    last_download: Option<String>,
    download_href: String,
    curl_exact: String,
    curl_latest: String,
    may_write: bool,
    may_delete: bool,
    notice: Option<String>,
    /// Downloads per day over the last 30 days, when the registry counts them.
    daily: Option<DailyChart>,
}

/// A package's downloads per day: the chart, and the same numbers as a table.
struct DailyChart {
    chart: crate::chart::Chart,
    days: Vec<(String, u64)>,
}

/// Days of downloads a package page shows.
const DAILY_WINDOW: u32 = 30;

async fn by_coordinates(
    who: &SignedIn,
    state: &WebState,
    (name, version, platform, arch): (String, String, String, String),
) -> Result<Package, WebError> {
    let coordinates = Coordinates {
        name: PackageName::parse(&name)?,
        version: Version::parse(&version)?,
        platform: platform.parse()?,
        arch: arch.parse()?,
    };
    Ok(state
        .packages
        .gate(&who.caller())
        .find(&coordinates)
        .await?)
}

pub async fn package(
    req: HttpRequest,
    who: SignedIn,
    state: web::Data<WebState>,
    path: web::Path<(String, String, String, String)>,
    query: web::Query<DoneParam>,
) -> Result<HttpResponse, WebError> {
    let p = by_coordinates(&who, &state, path.into_inner()).await?;
    let daily = match &state.stats {
        Some(stats) => {
            let series = stats.daily(p.id, DAILY_WINDOW).await?;
            let days: Vec<(String, u64)> = series
                .days
                .iter()
                .map(|d| (d.day.to_string(), d.downloads))
                .collect();
            Some(DailyChart {
                chart: crate::chart::Chart::bars(&days, "download", "days"),
                days,
            })
        }
        None => None,
    };
    let info = req.connection_info();
    let base = state
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{}://{}", info.scheme(), info.host()));
    let coords = format!(
        "{}/{}/{}/{}",
        p.name,
        p.version,
        p.platform.as_str(),
        p.arch.as_str()
    );
    let signature = p.signature.as_ref().map(|s| match &s.verified_by {
        Some(v) => match &v.by {
            agentpkg_model::VerifiedBy::Key(key) => format!(
                "{} signature, verified by key {}",
                s.format.as_str(),
                key.as_str()
            ),
            agentpkg_model::VerifiedBy::Sigstore {
                issuer, signed_at, ..
            } => format!(
                "Sigstore bundle, verified: signed by {} ({issuer}) at {}",
                v.signer,
                signed_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        },
        None => format!(
            "{} signature, not verified by a trusted key",
            s.format.as_str()
        ),
    });
    page(&PackagePage {
        layout: Layout::of(format!("{} {}", p.name, p.version), &who),
        sha256: p.checksum.as_str().to_owned(),
        filename: p.filename.as_str().to_owned(),
        description: p.description.as_str().to_owned(),
        signature,
        downloads: p.download_count,
        last_download: p.last_downloaded_at.map(|t| format::ago(t, Utc::now())),
        download_href: format!("/api/v1/packages/{}/download", p.id),
        curl_exact: format!(
            "curl -fLo '{}' -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/packages/{coords}/download",
            p.filename.as_str()
        ),
        curl_latest: format!(
            "curl -fLOJ -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/packages/{}/latest/{}/{}/download",
            p.name,
            p.platform.as_str(),
            p.arch.as_str()
        ),
        may_write: who.caller().permits(Role::Publisher, &p.name),
        may_delete: who.caller().permits(Role::Admin, &p.name),
        notice: notice(query.done.as_deref()),
        daily,
        p: Row::of(&p),
    })
}

#[derive(Deserialize)]
pub struct OwnerForm {
    #[serde(default)]
    csrf: String,
    /// A username, or `team:<name>`.
    #[serde(default)]
    owner: String,
}

/// Adds (`action` `add`) or removes (`remove`) an owner of a name: a user, or a team
/// written `team:<name>`. The package manager's gate decides who may.
pub async fn change_owner(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: agentpkg_http::RequestContext,
    path: web::Path<(String, String)>,
    form: web::Form<OwnerForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let (name, action) = path.into_inner();
    let name = PackageName::parse(&name)?;
    let add = match action.as_str() {
        "add" => true,
        "remove" => false,
        _ => return Err(WebError::NotFound("no such action".into())),
    };
    let owner = form.owner.trim();
    let owner = match owner.strip_prefix("team:") {
        Some(team) => agentpkg_packagemgr::OwnerRef::Team(team.trim().to_owned()),
        None => agentpkg_packagemgr::OwnerRef::User(
            state.accounts.find_user(owner).await.map_err(|_| {
                WebError::Refused(
                    actix_web::http::StatusCode::NOT_FOUND,
                    format!("there is no user {owner:?} (a team is written team:<name>)"),
                )
            })?,
        ),
    };
    state
        .packages
        .gate(&ctx.caller(&who.credential))
        .change_owner(&name, &owner, add)
        .await?;
    Ok(super::see_other(&format!("/packages/{name}")))
}
