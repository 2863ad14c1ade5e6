//! Trusted signing keys: registered and removed by admins, readable by everyone signed in
//! (an agent fetches the key to check a package itself).

use actix_web::{HttpResponse, web};
use agentpkg_model::{KeyFingerprint, KeyPatterns, NamePattern, TrustedKey};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{Admin, ApiError, ApiState, Viewer};

/// A key to trust.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKey {
    /// The ASCII-armoured OpenPGP public key, as `gpg --armor --export KEYID` prints it.
    #[schema(
        example = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n…\n-----END PGP PUBLIC KEY BLOCK-----"
    )]
    key: String,
    /// The package name patterns it may sign (`*` for any run of characters): at least
    /// one; `["*"]` for every name.
    #[schema(example = json!(["otelcol*"]))]
    patterns: Vec<String>,
}

/// A trusted key.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyView {
    /// The primary key's fingerprint, upper-case hexadecimal.
    #[schema(example = "69BEF1F11B6C5E2D0BC01157EEAA4D0602DF1AAA")]
    fingerprint: String,
    /// User ids with a valid self-signature, the primary one first.
    user_ids: Vec<String>,
    /// The primary key's public-key algorithm.
    #[schema(example = "EdDSALegacy")]
    algorithm: String,
    key_created_at: Option<DateTime<Utc>>,
    /// When the key stops verifying (null: never).
    expires_at: Option<DateTime<Utc>>,
    /// Whether it has expired by now.
    expired: bool,
    /// Whether it carries a valid revocation of itself.
    revoked: bool,
    /// Package name patterns it may sign.
    patterns: Vec<String>,
    /// The key, ASCII-armoured, to verify downloads with (`gpgv`, `sqv`).
    armored: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TrustedKey> for KeyView {
    fn from(k: TrustedKey) -> Self {
        Self {
            fingerprint: k.fingerprint.to_string(),
            expired: k.expires_at.is_some_and(|at| at <= Utc::now()),
            user_ids: k.user_ids,
            algorithm: k.algorithm,
            key_created_at: k.key_created_at,
            expires_at: k.expires_at,
            revoked: k.revoked,
            patterns: k
                .patterns
                .patterns()
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            armored: k.armored,
            created_at: k.created_at,
            updated_at: k.updated_at,
        }
    }
}

pub(crate) fn keyring(state: &ApiState) -> Result<&agentpkg_packagemgr::Keyring, ApiError> {
    state
        .packages
        .keyring()
        .ok_or_else(|| ApiError::not_found("this registry does not keep signing keys"))
}

/// Trust a signing key
///
/// Registers an OpenPGP public key for the package names its patterns match. Keys with
/// signing subkeys work; expired and revoked keys are kept (and shown so) but verify
/// nothing. Sending a key that is already trusted updates it (a renewed expiry, a
/// revocation, new subkeys, other patterns). Needs the admin role.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "signing",
    request_body = NewKey,
    responses(
        (status = 201, description = "Trusted", body = KeyView, headers(
            ("Location" = String, description = "The key's URL"),
        )),
        (status = 200, description = "Already trusted: updated", body = KeyView),
        (status = 400, description = "Not an OpenPGP public key, or invalid patterns", body = ErrorBody),
    ),
)]
pub(crate) async fn add(
    admin: Admin,
    state: web::Data<ApiState>,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let patterns = KeyPatterns::new(
        body.patterns
            .iter()
            .map(|p| NamePattern::parse(p))
            .collect::<Result<_, _>>()?,
    )?;
    keyring(&state)?;
    let (key, created) = state
        .packages
        .gate(&admin.caller)
        .add_key(&body.key, patterns)
        .await?;
    let location = format!("/api/v1/keys/{}", key.fingerprint);
    let mut answer = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer
        .insert_header(("Location", location))
        .json(KeyView::from(key)))
}

/// List trusted keys
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "signing",
    responses((status = 200, description = "Trusted keys, oldest first", body = Vec<KeyView>)),
)]
pub(crate) async fn list(
    _viewer: Viewer,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let keys = keyring(&state)?.list().await?;
    let views: Vec<KeyView> = keys.into_iter().map(KeyView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Get a trusted key
///
/// Needs the viewer role.
#[utoipa::path(
    get,
    path = "/api/v1/keys/{fingerprint}",
    tag = "signing",
    params(("fingerprint" = String, Path, description = "The primary key's fingerprint (40 or 64 hexadecimal digits)")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 400, description = "Not a fingerprint", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    ),
)]
pub(crate) async fn get(
    _viewer: Viewer,
    state: web::Data<ApiState>,
    fingerprint: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let fingerprint = KeyFingerprint::parse(&fingerprint)?;
    let key = keyring(&state)?.get(&fingerprint).await?;
    Ok(HttpResponse::Ok().json(KeyView::from(key)))
}

/// Remove a trusted key
///
/// The key verifies nothing new; packages it verified keep the record of who verified
/// them and when. Needs the admin role.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{fingerprint}",
    tag = "signing",
    params(("fingerprint" = String, Path, description = "The primary key's fingerprint")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a fingerprint", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    ),
)]
pub(crate) async fn remove(
    admin: Admin,
    state: web::Data<ApiState>,
    fingerprint: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let fingerprint = KeyFingerprint::parse(&fingerprint)?;
    keyring(&state)?;
    state
        .packages
        .gate(&admin.caller)
        .remove_key(&fingerprint)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
