//! The pages: each a thin handler that asks the package manager or the accounts and renders
//! a template. Every value shown is escaped by the templates (askama's HTML escaping).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use agentpkg_api::{ApiState, RequestContext};
use agentpkg_model::{
    Activity, Arch, AuditAction, Coordinates, Description, ListQuery, Package, PackageName,
    PackagePatch, PageRequest, Platform, Role, Version,
};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use crate::error::WebError;
use crate::format;
use crate::session::{SignedIn, cleared_cookie, safe_next, session_cookie};

/// The page's content security policy: scripts and styles from this site only (no inline
/// script may run), no frames, forms post here only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// An HTML answer with the headers every page carries.
pub fn secured(mut builder: HttpResponseBuilder, html: String) -> HttpResponse {
    builder
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

fn page(template: &impl Template) -> Result<HttpResponse, WebError> {
    Ok(secured(HttpResponse::Ok(), template.render()?))
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}

/// What every page's frame needs: its title and who is signed in.
pub struct Layout {
    pub title: String,
    pub user: Option<UserNav>,
}

pub struct UserNav {
    pub username: String,
    pub role: String,
    pub csrf: String,
    pub publisher: bool,
    pub admin: bool,
}

impl Layout {
    pub fn anonymous(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            user: None,
        }
    }

    fn of(title: impl Into<String>, who: &SignedIn) -> Self {
        Self {
            title: title.into(),
            user: Some(UserNav {
                username: who.credential.username.clone(),
                role: who.credential.role.to_string(),
                csrf: who.csrf.clone(),
                publisher: who.is(Role::Publisher),
                admin: who.is(Role::Admin),
            }),
        }
    }
}

/// A package as the pages show it.
pub struct Row {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub platform: &'static str,
    pub arch: &'static str,
    pub size: String,
    pub bytes: u64,
    pub ago: String,
    pub exact: String,
    pub iso: String,
    pub yanked: bool,
    pub prerelease: bool,
    pub href: String,
}

impl Row {
    fn of(p: &Package) -> Self {
        let now = Utc::now();
        Self {
            id: p.id,
            name: p.name.to_string(),
            version: p.version.to_string(),
            platform: p.platform.as_str(),
            arch: p.arch.as_str(),
            size: format::size(p.file_size),
            bytes: p.file_size,
            ago: format::ago(p.created_at, now),
            exact: format::exact(p.created_at),
            iso: p.created_at.to_rfc3339(),
            yanked: !p.is_active,
            prerelease: !p.version.as_semver().pre.is_empty(),
            href: package_href(p),
        }
    }
}

fn package_href(p: &Package) -> String {
    format!(
        "/packages/{}/{}/{}/{}",
        p.name,
        p.version,
        p.platform.as_str(),
        p.arch.as_str()
    )
}

// ---------------------------------------------------------------- sign in and out

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

pub async fn login_form(query: web::Query<NextParam>) -> Result<HttpResponse, WebError> {
    page(&LoginPage {
        layout: Layout::anonymous("Sign in"),
        next: safe_next(query.next.as_deref()),
        username: String::new(),
        error: None,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let LoginForm {
        username,
        password,
        next,
    } = form.into_inner();
    let next = safe_next(next.as_deref());
    let refused = |status: StatusCode, error: String| -> Result<HttpResponse, WebError> {
        let html = LoginPage {
            layout: Layout::anonymous("Sign in"),
            next: next.clone(),
            username: username.clone(),
            error: Some(error),
        }
        .render()?;
        Ok(secured(HttpResponse::build(status), html))
    };
    let signed_in = match state
        .accounts
        .login_from(&username, password.into(), ctx.address)
        .await
    {
        Ok(s) => s,
        Err(agentpkg_packagemgr::Error::BadCredentials) => {
            let mut event = ctx.event(agentpkg_model::AuditAction::LoginFailed, None);
            event.actor = Some(username.chars().take(64).collect());
            state.audit.record(event).await;
            return refused(
                StatusCode::UNAUTHORIZED,
                "Wrong username or password.".into(),
            );
        }
        Err(e) => {
            let e = agentpkg_api::ApiError::from(e);
            return refused(e.status, e.message);
        }
    };
    let (token, _) = state
        .tokens
        .issue(&signed_in.user, signed_in.credentials_version)?;
    tracing::info!(username = %signed_in.user.username, "signed in to the web interface");
    Ok(HttpResponse::SeeOther()
        .cookie(session_cookie(&req, token))
        .insert_header((header::LOCATION, next))
        .finish())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    req: HttpRequest,
    who: SignedIn,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    Ok(HttpResponse::SeeOther()
        .cookie(cleared_cookie(&req))
        .insert_header((header::LOCATION, "/login"))
        .finish())
}

// ---------------------------------------------------------------- packages

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
    page: u32,
    pages: u32,
    prev: Option<String>,
    next: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ListParams {
    q: Option<String>,
    platform: Option<String>,
    arch: Option<String>,
    yanked: Option<String>,
    page: Option<u32>,
    done: Option<String>,
}

fn notice(done: Option<&str>) -> Option<String> {
    Some(
        match done? {
            "deleted" => "The package was deleted.",
            "uploaded" => "The package was uploaded.",
            "yanked" => "The package was yanked: hidden from lists and latest, still downloadable.",
            "restored" => "The package was restored.",
            "described" => "The description was saved.",
            "user-created" => "The user was created.",
            "user-deleted" => "The user was deleted.",
            _ => return None,
        }
        .to_owned(),
    )
}

pub async fn packages(
    who: SignedIn,
    state: web::Data<ApiState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, WebError> {
    const PER_PAGE: u32 = 25;
    let q = params.q.clone().unwrap_or_default().trim().to_lowercase();
    let platform = params.platform.clone().unwrap_or_default();
    let arch = params.arch.clone().unwrap_or_default();
    let yanked = params.yanked.as_deref() == Some("on");
    let page_no = params.page.unwrap_or(1).max(1);
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
        names: who.credential.names.clone(),
        page: PageRequest::new(Some(page_no), Some(PER_PAGE)),
    };
    let found = state.packages.list(&query).await?;
    let pages = u32::try_from(found.total.div_ceil(u64::from(PER_PAGE)))
        .unwrap_or(u32::MAX)
        .max(1);
    let link = |n: u32| {
        let mut pairs = vec![("page", n.to_string())];
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
    page(&PackagesPage {
        layout: Layout::of("Packages", &who),
        rows: found.items.iter().map(Row::of).collect(),
        prev: (page_no > 1).then(|| link(page_no - 1)),
        next: (page_no < pages).then(|| link(page_no + 1)),
        q,
        platform,
        arch,
        yanked,
        platforms: Platform::ALL.iter().map(|p| p.as_str()).collect(),
        arches: Arch::ALL.iter().map(|a| a.as_str()).collect(),
        total: found.total,
        page: page_no,
        pages,
        notice: notice(params.done.as_deref()),
    })
}

#[derive(Template)]
#[template(path = "name.html")]
struct NamePage {
    layout: Layout,
    name: String,
    /// platform/arch columns present.
    columns: Vec<(&'static str, &'static str)>,
    /// version, pre-release, and one cell per column.
    versions: Vec<(String, bool, Vec<Option<Row>>)>,
}

pub async fn name(
    who: SignedIn,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let name = PackageName::parse(&path)?;
    if !who.credential.may_touch(&name) {
        return Err(WebError::NotFound(format!("no package named {name}")));
    }
    let history = state.packages.history(&name).await?;
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
    page(&NamePage {
        layout: Layout::of(name.to_string(), &who),
        name: name.to_string(),
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
}

#[derive(Deserialize)]
pub struct DoneParam {
    done: Option<String>,
}

async fn by_coordinates(
    who: &SignedIn,
    state: &ApiState,
    (name, version, platform, arch): (String, String, String, String),
) -> Result<Package, WebError> {
    let coordinates = Coordinates {
        name: PackageName::parse(&name)?,
        version: Version::parse(&version)?,
        platform: platform.parse()?,
        arch: arch.parse()?,
    };
    if !who.credential.may_touch(&coordinates.name) {
        return Err(WebError::NotFound("package not found".into()));
    }
    Ok(state.packages.find(&coordinates).await?)
}

pub async fn package(
    req: HttpRequest,
    who: SignedIn,
    state: web::Data<ApiState>,
    path: web::Path<(String, String, String, String)>,
    query: web::Query<DoneParam>,
) -> Result<HttpResponse, WebError> {
    let p = by_coordinates(&who, &state, path.into_inner()).await?;
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
        Some(v) => format!(
            "{} signature, verified by key {}",
            s.format.as_str(),
            v.key.as_str()
        ),
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
            "curl -fLOJ -H \"Authorization: Bearer $TOKEN\" '{base}/api/v1/packages/latest/download?name={}&platform={}&arch={}'",
            p.name,
            p.platform.as_str(),
            p.arch.as_str()
        ),
        may_write: who.is(Role::Publisher) && who.credential.may_touch(&p.name),
        may_delete: who.is(Role::Admin) && who.credential.may_touch(&p.name),
        notice: notice(query.done.as_deref()),
        p: Row::of(&p),
    })
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    description: Option<String>,
}

/// Yank, restore or describe: `action` from the path.
pub async fn change(
    who: SignedIn,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    path: web::Path<(i64, String)>,
    form: web::Form<ChangeForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Publisher)?;
    let (id, action) = path.into_inner();
    let (patch, done, audited) = match action.as_str() {
        "yank" => (
            PackagePatch {
                is_active: Some(false),
                description: None,
            },
            "yanked",
            AuditAction::Yank,
        ),
        "restore" => (
            PackagePatch {
                is_active: Some(true),
                description: None,
            },
            "restored",
            AuditAction::Restore,
        ),
        "describe" => (
            PackagePatch {
                is_active: None,
                description: Some(Description::parse(
                    form.description.as_deref().unwrap_or_default(),
                )?),
            },
            "described",
            AuditAction::Describe,
        ),
        _ => return Err(WebError::NotFound("no such action".into())),
    };
    let principal = agentpkg_api::Principal(who.credential.clone());
    principal.may_write(&state.packages.get(id).await?.name)?;
    let p = state
        .packages
        .update(id, patch, Some(&principal.actor()))
        .await?;
    state
        .audit
        .record(ctx.package_event(audited, &principal, &p))
        .await;
    Ok(see_other(&format!("{}?done={done}", package_href(&p))))
}

#[derive(Template)]
#[template(path = "delete.html")]
struct DeletePage {
    layout: Layout,
    p: Row,
}

pub async fn confirm_delete(
    who: SignedIn,
    state: web::Data<ApiState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Admin)?;
    let p = state.packages.get(path.into_inner()).await?;
    if !who.credential.may_touch(&p.name) {
        return Err(WebError::NotFound("package not found".into()));
    }
    page(&DeletePage {
        layout: Layout::of("Delete a package", &who),
        p: Row::of(&p),
    })
}

pub async fn delete(
    who: SignedIn,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Admin)?;
    let id = path.into_inner();
    let principal = agentpkg_api::Principal(who.credential.clone());
    principal.may_write(&state.packages.get(id).await?.name)?;
    let p = state.packages.delete(id).await?;
    state
        .audit
        .record(ctx.package_event(AuditAction::Delete, &principal, &p))
        .await;
    tracing::info!(package = id, user = %who.credential.username, "package deleted from the web interface");
    Ok(see_other("/packages?done=deleted"))
}

// ---------------------------------------------------------------- upload

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    layout: Layout,
    platforms: Vec<&'static str>,
    arches: Vec<&'static str>,
}

pub async fn upload(who: SignedIn) -> Result<HttpResponse, WebError> {
    who.require(Role::Publisher)?;
    page(&UploadPage {
        layout: Layout::of("Upload", &who),
        platforms: Platform::ALL.iter().map(|p| p.as_str()).collect(),
        arches: Arch::ALL.iter().map(|a| a.as_str()).collect(),
    })
}

// ---------------------------------------------------------------- users

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<(i64, String, String, String, String, bool)>,
    notice: Option<String>,
    error: Option<String>,
}

async fn users_page(
    who: &SignedIn,
    state: &ApiState,
    notice_of: Option<&str>,
    error: Option<String>,
) -> Result<UsersPage, WebError> {
    let now = Utc::now();
    let users = state
        .accounts
        .list_users()
        .await?
        .into_iter()
        .map(|u| {
            (
                u.id,
                u.username.to_string(),
                u.role.to_string(),
                format::ago(u.created_at, now),
                format::exact(u.created_at),
                u.id == who.credential.user_id,
            )
        })
        .collect();
    Ok(UsersPage {
        layout: Layout::of("Users", who),
        users,
        notice: notice(notice_of),
        error,
    })
}

pub async fn users(
    who: SignedIn,
    state: web::Data<ApiState>,
    query: web::Query<DoneParam>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Admin)?;
    page(&users_page(&who, &state, query.done.as_deref(), None).await?)
}

#[derive(Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    role: String,
}

pub async fn create_user(
    who: SignedIn,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    form: web::Form<NewUserForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Admin)?;
    let created = async {
        let username = agentpkg_model::Username::parse(&form.username)?;
        let password = agentpkg_model::Password::parse(&form.password)?;
        let role: Role = form.role.parse()?;
        state
            .accounts
            .create_user(&username, &password, role)
            .await
            .map_err(WebError::from)
    }
    .await;
    match created {
        Ok(user) => {
            let principal = agentpkg_api::Principal(who.credential.clone());
            let mut event = ctx.event(AuditAction::UserCreate, Some(&principal));
            event.subject = Some(user.username.clone());
            event.detail = user.role.to_string();
            state.audit.record(event).await;
            Ok(see_other("/users?done=user-created"))
        }
        Err(WebError::Refused(status, message)) => {
            let html = users_page(&who, &state, None, Some(message))
                .await?
                .render()?;
            Ok(secured(HttpResponse::build(status), html))
        }
        Err(other) => Err(other),
    }
}

pub async fn delete_user(
    who: SignedIn,
    state: web::Data<ApiState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    who.require(Role::Admin)?;
    let id = path.into_inner();
    state
        .accounts
        .delete_user(who.credential.user_id, id)
        .await?;
    let principal = agentpkg_api::Principal(who.credential.clone());
    let mut event = ctx.event(AuditAction::UserDelete, Some(&principal));
    event.subject = Some(format!("user {id}"));
    state.audit.record(event).await;
    Ok(see_other("/users?done=user-deleted"))
}

// ---------------------------------------------------------------- the rest

#[derive(Template)]
#[template(path = "error.html")]
struct NotFoundPage {
    layout: Layout,
    status: u16,
    heading: String,
    message: String,
}

/// Paths nobody serves: the API's JSON 404 under `/api/` or for a client that does not
/// ask for HTML, a page otherwise.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if req.path().starts_with("/api/") || !wants_html {
        return actix_web::ResponseError::error_response(&agentpkg_api::ApiError::not_found(
            "no such route",
        ));
    }
    let html = NotFoundPage {
        layout: Layout::anonymous("Not found"),
        status: 404,
        heading: "Not found".into(),
        message:
            "There is no page here. The package may have been deleted, or the address mistyped."
                .into(),
    }
    .render()
    .unwrap_or_default();
    secured(HttpResponse::NotFound(), html)
}
