//! Sigstore identity policies: which keyless signers are trusted for which names. Added and
//! removed by admins, readable by everyone signed in.

use actix_web::{HttpResponse, web};
use agentpkg_model::{IdentityPattern, KeyPatterns, NamePattern, OidcIssuer, SigstoreIdentity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState, Viewer};

/// A keyless signer to trust.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewIdentity {
    /// The package name patterns it may sign (`*` for any run of characters): at least one.
    #[schema(example = json!(["otelcol*"]))]
    patterns: Vec<String>,
    /// The OIDC issuer in the signing certificate, compared exactly.
    #[schema(example = "https://token.actions.githubusercontent.com")]
    issuer: String,
    /// A regular expression the certificate's whole identity (its subject alternative
    /// name: a workflow URL, an email address) must match; anchored, `^…$`.
    #[schema(
        example = "^https://github\\.com/open-telemetry/opentelemetry-collector-releases/\\.github/workflows/base-release\\.yaml@refs/tags/v[^/]*$"
    )]
    san_regex: String,
}

/// A trusted keyless signer.
#[derive(Serialize, ToSchema)]
pub(crate) struct IdentityView {
    id: i64,
    patterns: Vec<String>,
    issuer: String,
    san_regex: String,
    /// The admin who added it (null once that user is deleted).
    added_by: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<SigstoreIdentity> for IdentityView {
    fn from(p: SigstoreIdentity) -> Self {
        Self {
            id: p.id,
            patterns: p
                .patterns
                .patterns()
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            issuer: p.issuer.to_string(),
            san_regex: p.san.as_str().to_owned(),
            added_by: p.added_by,
            created_at: p.created_at,
        }
    }
}

/// The keyring, when it verifies bundles.
fn keyring(state: &ApiState) -> Result<&agentpkg_packagemgr::Keyring, ApiError> {
    let keyring = super::keys::keyring(state)?;
    if keyring.sigstore().is_none() {
        return Err(ApiError::not_found(
            "this registry does not verify Sigstore bundles",
        ));
    }
    Ok(keyring)
}

/// Trust a Sigstore signer
///
/// Sigstore bundles (`sigstore-bundle` signatures) of the names the patterns match are
/// accepted when their certificate's issuer is `issuer` and its identity matches
/// `san_regex`, and the bundle verifies offline against the trust root. Needs the admin
/// role.
#[utoipa::path(
    post,
    path = "/api/v1/sigstore-identities",
    tag = "signing",
    request_body = NewIdentity,
    responses(
        (status = 201, description = "Trusted", body = IdentityView, headers(
            ("Location" = String, description = "The policy's URL"),
        )),
        (status = 400, description = "Invalid patterns, issuer or expression", body = ErrorBody),
    ),
)]
pub(crate) async fn add(
    admin: Admin,
    state: web::Data<ApiState>,
    body: web::Json<NewIdentity>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let patterns = KeyPatterns::new(
        body.patterns
            .iter()
            .map(|p| NamePattern::parse(p))
            .collect::<Result<_, _>>()?,
    )?;
    let issuer = OidcIssuer::parse(&body.issuer)?;
    let san = IdentityPattern::parse(&body.san_regex)?;
    keyring(&state)?;
    let identity = state
        .packages
        .gate(&admin.caller)
        .add_sigstore_identity(patterns, issuer, san)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/api/v1/sigstore-identities/{}", identity.id),
        ))
        .json(IdentityView::from(identity)))
}

/// List trusted Sigstore signers
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/sigstore-identities",
    tag = "signing",
    responses((status = 200, description = "Trusted signers, oldest first", body = Vec<IdentityView>)),
)]
pub(crate) async fn list(
    _viewer: Viewer,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let all = keyring(&state)?.identities().await?;
    Ok(HttpResponse::Ok().json(all.into_iter().map(IdentityView::from).collect::<Vec<_>>()))
}

/// Get a trusted Sigstore signer
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/sigstore-identities/{id}",
    tag = "signing",
    params(("id" = i64, Path, description = "The policy's id")),
    responses(
        (status = 200, description = "The policy", body = IdentityView),
        (status = 404, description = "No such policy", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let identity = keyring(&state)?.identity(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(IdentityView::from(identity)))
}

/// Stop trusting a Sigstore signer
///
/// It verifies nothing new; packages it verified keep the record. Needs the admin role.
#[utoipa::path(
    delete,
    path = "/api/v1/sigstore-identities/{id}",
    tag = "signing",
    params(("id" = i64, Path, description = "The policy's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such policy", body = ErrorBody),
    ),
)]
pub(crate) async fn remove(
    admin: Admin,
    state: web::Data<ApiState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    keyring(&state)?;
    state
        .packages
        .gate(&admin.caller)
        .remove_sigstore_identity(id.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
