//! The fleet's agents: a table filtered and paged by the database, with counts by version
//! and health at the top, and one agent's page.

use actix_web::{HttpResponse, web};
use agentpkg_model::{Agent, AgentFilter, AgentUid, PageRequest, Role};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::{Layout, fleet, page};
use crate::WebState;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

/// Agents per page.
const PER_PAGE: u32 = 50;

/// An agent in the table.
struct AgentRow {
    uid: String,
    name: String,
    platform: String,
    version: String,
    health: &'static str,
    status: String,
    connected: bool,
    seen: String,
    seen_exact: String,
}

fn attribute<'a>(a: &'a Agent, key: &str) -> Option<&'a str> {
    a.identifying
        .get(key)
        .or_else(|| a.non_identifying.get(key))
        .map(String::as_str)
}

fn health_word(a: &Agent) -> &'static str {
    match &a.health {
        Some(h) if h.healthy => "healthy",
        Some(_) => "unhealthy",
        None => "not reported",
    }
}

impl AgentRow {
    fn of(a: &Agent) -> Self {
        let top = a.package_statuses.iter().find(|s| s.name.is_empty());
        Self {
            uid: a.uid.to_string(),
            name: attribute(a, "service.name").unwrap_or("").to_owned(),
            platform: format!(
                "{}/{}",
                attribute(a, "os.type").unwrap_or("?"),
                attribute(a, "host.arch").unwrap_or("?")
            ),
            version: top.map_or_else(String::new, |s| s.agent_has_version.clone()),
            health: health_word(a),
            status: top.map_or_else(String::new, |s| s.status.to_string()),
            connected: a.connected,
            seen: format::ago(a.last_seen, Utc::now()),
            seen_exact: format::exact(a.last_seen),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct AgentsQuery {
    /// `key=value`, comma-separated.
    #[serde(default)]
    attributes: String,
    #[serde(default)]
    health: String,
    #[serde(default)]
    connected: String,
    #[serde(default)]
    status: String,
    page: Option<u32>,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    layout: Layout,
    agents: Vec<AgentRow>,
    total: u64,
    overview: agentpkg_fleet::FleetOverview,
    q: AgentsQuery,
    page: u32,
    pages: u32,
    previous: Option<String>,
    next: Option<String>,
    error: Option<String>,
}

fn filter_of(q: &AgentsQuery) -> Result<AgentFilter, String> {
    let mut filter = AgentFilter::default();
    for pair in q
        .attributes
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            format!("{pair:?} is not key=value (for example service.name=otelcol)")
        })?;
        filter
            .attributes
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    filter.healthy = match q.health.as_str() {
        "healthy" => Some(true),
        "unhealthy" => Some(false),
        _ => None,
    };
    filter.connected = match q.connected.as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    };
    if !q.status.is_empty() {
        filter.package_status = Some(q.status.parse().map_err(|e| format!("{e}"))?);
    }
    Ok(filter)
}

fn link(q: &AgentsQuery, page: u32) -> String {
    let query = serde_urlencoded::to_string([
        ("attributes", q.attributes.as_str()),
        ("health", q.health.as_str()),
        ("connected", q.connected.as_str()),
        ("status", q.status.as_str()),
        ("page", &page.to_string()),
    ])
    .unwrap_or_default();
    format!("/agents?{query}")
}

pub async fn agents(
    who: SignedIn,
    state: web::Data<WebState>,
    query: web::Query<AgentsQuery>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let q = query.into_inner();
    let fleet = fleet(&state)?;
    let page_no = q.page.unwrap_or(1).max(1);
    let (filter, error) = match filter_of(&q) {
        Ok(f) => (f, None),
        Err(why) => (AgentFilter::default(), Some(why)),
    };
    let found = fleet
        .agents(PageRequest::new(Some(page_no), Some(PER_PAGE)), &filter)
        .await?;
    let overview = fleet.overview(&filter).await?;
    let pages = u32::try_from(found.total.div_ceil(u64::from(PER_PAGE)))
        .unwrap_or(u32::MAX)
        .max(1);
    page(&AgentsPage {
        layout: Layout::of("Agents", &who),
        agents: found.items.iter().map(AgentRow::of).collect(),
        total: found.total,
        overview,
        previous: (page_no > 1).then(|| link(&q, page_no - 1)),
        next: (page_no < pages).then(|| link(&q, page_no + 1)),
        q,
        page: page_no,
        pages,
        error,
    })
}

/// One package's status, as the agent page shows it.
struct StatusRow {
    name: String,
    has: String,
    offered: String,
    status: String,
    error: String,
    progress: Option<String>,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    layout: Layout,
    uid: String,
    identifying: Vec<(String, String)>,
    non_identifying: Vec<(String, String)>,
    health: &'static str,
    health_status: String,
    last_error: String,
    statuses: Vec<StatusRow>,
    offered: Vec<(String, String, String)>,
    offer_note: Option<String>,
    connected: bool,
    seen: String,
    seen_exact: String,
    first_seen: String,
    disconnects: u64,
    owner: String,
}

pub async fn agent(
    who: SignedIn,
    state: web::Data<WebState>,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let uid = AgentUid::parse(&path).map_err(|_| WebError::NotFound("no such agent".into()))?;
    let a = fleet(&state)?.agent(&uid).await?;
    let now = Utc::now();
    let name = |n: &str| {
        if n.is_empty() {
            "top level".to_owned()
        } else {
            n.to_owned()
        }
    };
    page(&AgentPage {
        layout: Layout::of(format!("Agent {uid}"), &who),
        uid: uid.to_string(),
        identifying: a.identifying.clone().into_iter().collect(),
        non_identifying: a.non_identifying.clone().into_iter().collect(),
        health: health_word(&a),
        health_status: a
            .health
            .as_ref()
            .map_or_else(String::new, |h| h.status.clone()),
        last_error: a
            .health
            .as_ref()
            .map_or_else(String::new, |h| h.last_error.clone()),
        statuses: a
            .package_statuses
            .iter()
            .map(|s| StatusRow {
                name: name(&s.name),
                has: s.agent_has_version.clone(),
                offered: s.server_offered_version.clone(),
                status: s.status.to_string(),
                error: s.error_message.clone(),
                progress: s.download_percent.map(|p| format!("{p:.0} %")),
            })
            .collect(),
        offered: a
            .offered
            .iter()
            .map(|(n, o)| (name(n), o.version.clone(), format::ago(o.at, now)))
            .collect(),
        offer_note: a.offer_note.clone(),
        connected: a.connected,
        seen: format::ago(a.last_seen, now),
        seen_exact: format::exact(a.last_seen),
        first_seen: format::exact(a.first_seen),
        disconnects: a.disconnects,
        owner: a
            .owner
            .map_or_else(|| "nobody".to_owned(), |o| o.to_string()),
    })
}
