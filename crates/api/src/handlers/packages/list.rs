//! `GET /packages`: filtered, paginated, with `X-Total-Count` and RFC 8288 `Link`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use agentpkg_model::{
    Activity, Arch, ListQuery, NameFilter, PackageName, PageRequest, Platform, ValidationError,
    VersionRequirement,
};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::error::ErrorBody;
use crate::views::PackageView;
use crate::{ApiError, ApiState, Viewer};

#[derive(Deserialize, Serialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only packages of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<PackageName>)]
    name: Option<String>,
    /// Only names containing this text (a search, at most 128 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    /// Only packages for this platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<Platform>)]
    platform: Option<String>,
    /// Only packages for this architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<Arch>)]
    arch: Option<String>,
    /// A SemVer requirement (`^1.4`); needs `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<VersionRequirement>)]
    version: Option<String>,
    /// `true`: only active packages (the default); `false`: only yanked ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
    /// `true`: yanked packages too. (`include_inactive`, its former name, is still
    /// accepted.)
    #[serde(skip_serializing_if = "Option::is_none", alias = "include_inactive")]
    include_yanked: Option<bool>,
    /// Packages per page, 1 to 100 (default 50; out-of-range values are clamped).
    #[serde(skip_serializing_if = "Option::is_none")]
    per_page: Option<u32>,
    /// Page number, from 1 (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u32>,
}

/// List packages
///
/// Active packages, by name then newest version first. The body is the array of packages
/// (as in the system this one replaces); the total is in `X-Total-Count` and the
/// neighbouring pages in an RFC 8288 `Link` header. Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/packages",
    tag = "packages",
    params(ListParams),
    responses(
        (status = 200, description = "One page of packages", body = Vec<PackageView>, headers(
            ("X-Total-Count" = u64, description = "Packages matching the filters, on all pages"),
            ("Link" = String, description = "RFC 8288 links to the first, last, previous and next pages"),
        )),
        (status = 400, description = "Invalid filter", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    viewer: Viewer,
    state: web::Data<ApiState>,
    req: HttpRequest,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let name = params.name.as_deref().map(PackageName::parse).transpose()?;
    let version = params
        .version
        .as_deref()
        .map(VersionRequirement::parse)
        .transpose()?;
    let name = match (name, version) {
        (Some(name), version) => Some(NameFilter { name, version }),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(
                ValidationError::new("version", "a version requirement needs a name").into(),
            );
        }
    };
    let name_contains = match params.q.as_deref().map(str::trim) {
        Some(q) if q.chars().count() > PackageName::MAX_LEN => {
            return Err(ValidationError::new("q", "at most 128 characters").into());
        }
        Some(q) if !q.is_empty() => Some(q.to_lowercase()),
        _ => None,
    };
    let query = ListQuery {
        name,
        name_contains,
        platform: params.platform.as_deref().map(str::parse).transpose()?,
        arch: params.arch.as_deref().map(str::parse).transpose()?,
        activity: match (params.active, params.include_yanked) {
            (Some(true), _) => Activity::ActiveOnly,
            (Some(false), _) => Activity::InactiveOnly,
            (None, Some(true)) => Activity::All,
            (None, _) => Activity::ActiveOnly,
        },
        // The gate narrows this to the names the caller reaches.
        names: agentpkg_model::NameScope::All,
        page: PageRequest::new(params.page, params.per_page),
        from: agentpkg_model::ListFrom::Number,
    };
    let page = state.packages.gate(&viewer.caller).list(&query).await?;
    let mut response = HttpResponse::Ok();
    response.insert_header(("X-Total-Count", page.total.to_string()));
    response.insert_header((
        header::LINK,
        link_header(req.path(), &params, &query, page.total)?,
    ));
    Ok(response.json(crate::views::packages(&page.items)))
}

/// RFC 8288 links to the first, previous, next and last pages, with the same filters.
fn link_header(
    path: &str,
    params: &ListParams,
    q: &ListQuery,
    total: u64,
) -> Result<String, ApiError> {
    let per_page = u64::from(q.page.per_page);
    let last = total.div_ceil(per_page).max(1);
    let current = u64::from(q.page.page);
    let link = |page: u64, rel: &str| -> Result<String, ApiError> {
        let query = serde_urlencoded::to_string(ListParams {
            per_page: Some(q.page.per_page),
            page: Some(u32::try_from(page).unwrap_or(u32::MAX)),
            name: params.name.clone(),
            q: params.q.clone(),
            platform: params.platform.clone(),
            arch: params.arch.clone(),
            version: params.version.clone(),
            active: params.active,
            include_yanked: params.include_yanked,
        })
        .map_err(ApiError::internal)?;
        Ok(format!("<{path}?{query}>; rel=\"{rel}\""))
    };
    let mut links = vec![link(1, "first")?, link(last, "last")?];
    if current > 1 {
        links.push(link((current - 1).min(last), "prev")?);
    }
    if current < last {
        links.push(link(current + 1, "next")?);
    }
    Ok(links.join(", "))
}
