//! The audit log (admins): who did what, to which package or user, when, from where —
//! filtered and paged by the database.

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;
use agentpkg_model::{AuditAction, AuditQuery, PageRequest};
use askama::Template;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;

use super::{Layout, page};
use crate::WebState;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

const PER_PAGE: u32 = 50;

#[derive(Deserialize, Default)]
pub struct AuditForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    package: String,
    /// A day, `YYYY-MM-DD` (from its start, UTC).
    #[serde(default)]
    since: String,
    /// A day, `YYYY-MM-DD` (to its end, UTC).
    #[serde(default)]
    until: String,
    page: Option<u32>,
}

struct EventRow {
    at: String,
    ago: String,
    who: String,
    action: &'static str,
    refused: bool,
    what: String,
    detail: String,
    address: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    events: Vec<EventRow>,
    actions: Vec<&'static str>,
    q: AuditForm,
    total: u64,
    page: u32,
    pages: u32,
    previous: Option<String>,
    next: Option<String>,
    error: Option<String>,
}

fn day(field: &'static str, text: &str) -> Result<Option<NaiveDate>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| format!("{field}: {text:?} is not a day (YYYY-MM-DD)"))
}

fn query_of(q: &AuditForm, page: u32) -> Result<AuditQuery, String> {
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    Ok(AuditQuery {
        actor: blank(&q.actor),
        action: blank(&q.action)
            .map(|a| {
                a.parse()
                    .map_err(|e: agentpkg_model::ValidationError| e.message)
            })
            .transpose()?,
        outcome: blank(&q.outcome)
            .map(|o| {
                o.parse()
                    .map_err(|e: agentpkg_model::ValidationError| e.message)
            })
            .transpose()?,
        package: blank(&q.package),
        since: day("since", &q.since)?
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc()),
        until: day("until", &q.until)?
            .and_then(|d| d.succ_opt())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc()),
        page: PageRequest::new(Some(page), Some(PER_PAGE)),
    })
}

fn link(q: &AuditForm, page: u32) -> String {
    let query = serde_urlencoded::to_string([
        ("actor", q.actor.as_str()),
        ("action", q.action.as_str()),
        ("outcome", q.outcome.as_str()),
        ("package", q.package.as_str()),
        ("since", q.since.as_str()),
        ("until", q.until.as_str()),
        ("page", &page.to_string()),
    ])
    .unwrap_or_default();
    format!("/audit?{query}")
}

pub async fn audit(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Query<AuditForm>,
) -> Result<HttpResponse, WebError> {
    let q = form.into_inner();
    let log = state
        .audit
        .as_ref()
        .ok_or_else(|| WebError::NotFound("this registry keeps no audit log".into()))?;
    let page_no = q.page.unwrap_or(1).max(1);
    let (query, error) = match query_of(&q, page_no) {
        Ok(query) => (query, None),
        Err(why) => (
            query_of(&AuditForm::default(), 1).unwrap_or_default(),
            Some(why),
        ),
    };
    let found = log.list_for(&query, &ctx.caller(&who.credential)).await?;
    let now = Utc::now();
    let pages = u32::try_from(found.total.div_ceil(u64::from(PER_PAGE)))
        .unwrap_or(u32::MAX)
        .max(1);
    let events = found
        .items
        .iter()
        .map(|e| EventRow {
            at: format::exact(e.at),
            ago: format::ago(e.at, now),
            who: match (&e.actor, &e.token_name) {
                (Some(a), Some(t)) => format!("{a} (token {t})"),
                (Some(a), None) => a.clone(),
                (None, _) => "the server".into(),
            },
            action: e.action.as_str(),
            refused: e.outcome.as_str() == "refused",
            what: [e.package.as_deref(), e.subject.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" · "),
            detail: e.detail.clone(),
            address: e.address.clone().unwrap_or_default(),
        })
        .collect();
    page(&AuditPage {
        layout: Layout::of("Audit log", &who),
        events,
        actions: AuditAction::ALL.iter().map(|a| a.as_str()).collect(),
        total: found.total,
        previous: (page_no > 1).then(|| link(&q, page_no - 1)),
        next: (page_no < pages).then(|| link(&q, page_no + 1)),
        q,
        page: page_no,
        pages,
        error,
    })
}
