//! Trusted signing keys: see each key's fingerprint, user ids, expiry, subkeys and patterns; an
//! admin adds an armoured key with its patterns, or removes one. The same for Sigstore
//! signers (an issuer and an identity pattern for some names). Through the package
//! manager's gate, as the API.

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;
use agentpkg_model::{
    IdentityPattern, KeyFingerprint, KeyPatterns, NamePattern, OidcIssuer, Role, SigstoreIdentity,
    Subkey, TrustedKey,
};
use agentpkg_packagemgr::Keyring;
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{CsrfForm, Layout, page, secured, see_other};
use crate::WebState;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

struct KeyRow {
    fingerprint: String,
    user_ids: String,
    algorithm: String,
    expires: String,
    expired: bool,
    revoked: bool,
    patterns: String,
    added: String,
    subkeys: Vec<SubkeyRow>,
}

struct SubkeyRow {
    fingerprint: String,
    algorithm: String,
    /// "signs", "does not sign", "revoked" or "expired …", in words.
    state: String,
    usable: bool,
}

impl SubkeyRow {
    fn of(s: &Subkey, now: DateTime<Utc>) -> Self {
        let expired = s.expires_at.filter(|at| *at <= now);
        let state = if s.revoked {
            "revoked".to_owned()
        } else if let Some(at) = expired {
            format!("expired {}", format::exact(at))
        } else if !s.signs {
            "does not sign".to_owned()
        } else {
            match s.expires_at {
                Some(at) => format!("signs until {}", format::exact(at)),
                None => "signs".to_owned(),
            }
        };
        Self {
            fingerprint: s.fingerprint.clone(),
            algorithm: s.algorithm.clone(),
            usable: s.signs && !s.revoked && expired.is_none(),
            state,
        }
    }
}

impl KeyRow {
    fn of(k: &TrustedKey) -> Self {
        let now = Utc::now();
        Self {
            fingerprint: k.fingerprint.to_string(),
            user_ids: k.user_ids.join(", "),
            algorithm: k.algorithm.clone(),
            expires: k.expires_at.map_or_else(|| "never".into(), format::exact),
            expired: k.expires_at.is_some_and(|at| at <= now),
            revoked: k.revoked,
            patterns: patterns_text(&k.patterns),
            added: format::ago(k.created_at, now),
            subkeys: Keyring::subkeys(k)
                .iter()
                .map(|s| SubkeyRow::of(s, now))
                .collect(),
        }
    }
}

struct SignerRow {
    id: i64,
    patterns: String,
    issuer: String,
    san: String,
    added: String,
}

impl SignerRow {
    fn of(p: &SigstoreIdentity) -> Self {
        Self {
            id: p.id,
            patterns: patterns_text(&p.patterns),
            issuer: p.issuer.to_string(),
            san: p.san.as_str().to_owned(),
            added: format::ago(p.created_at, Utc::now()),
        }
    }
}

fn patterns_text(patterns: &KeyPatterns) -> String {
    patterns
        .patterns()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_patterns(text: &str) -> Result<KeyPatterns, agentpkg_model::ValidationError> {
    KeyPatterns::new(
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(NamePattern::parse)
            .collect::<Result<_, _>>()?,
    )
}

#[derive(Deserialize, Default)]
pub struct SignerForm {
    #[serde(default)]
    csrf: String,
    /// Name patterns, comma-separated.
    #[serde(default)]
    patterns: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    san_regex: String,
}

#[derive(Deserialize, Default)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    /// Name patterns, comma-separated.
    #[serde(default)]
    patterns: String,
}

#[derive(Deserialize)]
pub struct KeysQuery {
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    admin: bool,
    form: KeyForm,
    notice: Option<String>,
    error: Option<String>,
    /// Sigstore signers, when bundles are verified.
    signers: Option<Vec<SignerRow>>,
    signer_form: SignerForm,
    signer_error: Option<String>,
}

async fn keys_page(who: &SignedIn, state: &WebState, form: KeyForm) -> Result<KeysPage, WebError> {
    let keyring = state
        .packages
        .keyring()
        .ok_or_else(|| WebError::NotFound("this registry keeps no signing keys".into()))?;
    let signers = match keyring.sigstore() {
        Some(_) => Some(
            keyring
                .identities()
                .await?
                .iter()
                .map(SignerRow::of)
                .collect(),
        ),
        None => None,
    };
    Ok(KeysPage {
        layout: Layout::of("Signing keys", who),
        keys: keyring.list().await?.iter().map(KeyRow::of).collect(),
        admin: who.is(Role::Admin),
        form,
        notice: None,
        error: None,
        signers,
        signer_form: SignerForm::default(),
        signer_error: None,
    })
}

pub async fn keys(
    who: SignedIn,
    state: web::Data<WebState>,
    query: web::Query<KeysQuery>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let mut p = keys_page(&who, &state, KeyForm::default()).await?;
    p.notice = match query.done.as_deref() {
        Some("added") => Some("The key is trusted for its patterns.".into()),
        Some("removed") => Some("The key was removed: it verifies nothing any more.".into()),
        Some("signer-added") => Some("The signer is trusted for its patterns.".into()),
        Some("signer-removed") => {
            Some("The signer was removed: its bundles verify nothing any more.".into())
        }
        _ => None,
    };
    page(&p)
}

pub async fn add_key(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<KeyForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    let added = async {
        let patterns = parse_patterns(&f.patterns)?;
        state
            .packages
            .gate(&ctx.caller(&who.credential))
            .add_key(&f.key, patterns)
            .await
            .map_err(WebError::from)
    }
    .await;
    match added {
        Ok(_) => Ok(see_other("/keys?done=added")),
        Err(WebError::Refused(status, message)) => {
            let mut p = keys_page(&who, &state, f).await?;
            p.error = Some(message);
            Ok(secured(HttpResponse::build(status), p.render()?))
        }
        Err(other) => Err(other),
    }
}

pub async fn remove_key(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let fingerprint = KeyFingerprint::parse(&path)?;
    state
        .packages
        .gate(&ctx.caller(&who.credential))
        .remove_key(&fingerprint)
        .await?;
    Ok(see_other("/keys?done=removed"))
}

pub async fn add_signer(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<SignerForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    let added = async {
        let patterns = parse_patterns(&f.patterns)?;
        let issuer = OidcIssuer::parse(f.issuer.trim())?;
        let san = IdentityPattern::parse(f.san_regex.trim())?;
        state
            .packages
            .gate(&ctx.caller(&who.credential))
            .add_sigstore_identity(patterns, issuer, san)
            .await
            .map_err(WebError::from)
    }
    .await;
    match added {
        Ok(_) => Ok(see_other("/keys?done=signer-added")),
        Err(WebError::Refused(status, message)) => {
            let mut p = keys_page(&who, &state, KeyForm::default()).await?;
            p.signer_error = Some(message);
            p.signer_form = f;
            Ok(secured(HttpResponse::build(status), p.render()?))
        }
        Err(other) => Err(other),
    }
}

pub async fn remove_signer(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    state
        .packages
        .gate(&ctx.caller(&who.credential))
        .remove_sigstore_identity(path.into_inner())
        .await?;
    Ok(see_other("/keys?done=signer-removed"))
}
