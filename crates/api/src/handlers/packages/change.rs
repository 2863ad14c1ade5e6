//! Yank, restore, describe and delete.

use actix_web::{HttpResponse, web};
use agentpkg_model::{Description, PackagePatch};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::views::PackageView;
use crate::{Admin, ApiError, ApiState, Publisher};

/// A change to a package; absent fields are left as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchBody {
    /// `false` yanks the package, `true` restores it.
    is_active: Option<bool>,
    /// A new description.
    #[schema(value_type = Option<Description>)]
    description: Option<String>,
}

/// Yank, restore or describe a package
///
/// `{"is_active": false}` yanks a package, `true` restores it; `description` edits it.
/// Needs the publisher role.
#[utoipa::path(
    patch,
    path = "/api/v1/packages/{id}",
    tag = "packages",
    params(("id" = i64, Path, description = "Package id")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The updated package", body = PackageView),
        (status = 400, description = "Invalid body or id", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn patch(
    publisher: Publisher,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
    body: web::Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let patch = PackagePatch {
        is_active: body.is_active,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?,
    };
    let package = state
        .packages
        .gate(&publisher.caller)
        .change(*id, patch)
        .await?;
    Ok(HttpResponse::Ok().json(PackageView::from(&package)))
}

/// Delete a package
///
/// Removes the package and, when no other package shares them, its bytes. Needs the admin
/// role.
#[utoipa::path(
    delete,
    path = "/api/v1/packages/{id}",
    tag = "packages",
    params(("id" = i64, Path, description = "Package id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
pub(crate) async fn delete(
    admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.packages.gate(&admin.caller).delete(*id).await?;
    Ok(HttpResponse::NoContent().finish())
}
