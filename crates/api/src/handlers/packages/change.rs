//! Yank, restore, describe and delete.

use actix_web::{HttpResponse, web};
use agentpkg_model::{AuditAction, Description, PackagePatch};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::views::PackageView;
use crate::{Admin, ApiError, ApiState, Publisher, RequestContext};

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
    ctx: RequestContext,
    id: web::Path<i64>,
    body: web::Json<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    publisher
        .principal
        .may_write(&state.packages.get(id).await?.name)?;
    let body = body.into_inner();
    let patch = PackagePatch {
        is_active: body.is_active,
        description: body
            .description
            .as_deref()
            .map(Description::parse)
            .transpose()?,
    };
    let changes = [
        patch.is_active.map(|active| {
            if active {
                AuditAction::Restore
            } else {
                AuditAction::Yank
            }
        }),
        patch.description.as_ref().map(|_| AuditAction::Describe),
    ];
    let actor = publisher.principal.actor();
    let package = state.packages.update(id, patch, Some(&actor)).await?;
    for action in changes.into_iter().flatten() {
        let event = ctx.package_event(action, &publisher.principal, &package);
        state.audit.record(event).await;
    }
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
    ctx: RequestContext,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    admin
        .principal
        .may_write(&state.packages.get(id).await?.name)?;
    let package = state.packages.delete(id).await?;
    let event = ctx.package_event(AuditAction::Delete, &admin.principal, &package);
    state.audit.record(event).await;
    Ok(HttpResponse::NoContent().finish())
}
