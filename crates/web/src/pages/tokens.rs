//! API tokens: create one (scope, name patterns, expiry) and see its secret once, list
//! one's own (an admin: everyone's), revoke. Through the accounts' gate, as the API.

use actix_web::{HttpResponse, web};
use agentpkg_http::RequestContext;
use agentpkg_model::{ApiToken, NameScope, Role};
use agentpkg_packagemgr::TokenRequest;
use askama::Template;
use chrono::{NaiveDate, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{CsrfForm, Layout, page, secured, see_other};
use crate::WebState;
use crate::error::WebError;
use crate::format;
use crate::session::SignedIn;

struct TokenRow {
    id: i64,
    user_id: i64,
    name: String,
    scope: String,
    packages: String,
    created: String,
    expires: String,
    used: String,
}

impl TokenRow {
    fn of(t: &ApiToken) -> Self {
        let now = Utc::now();
        Self {
            id: t.id,
            user_id: t.user_id,
            name: t.name.clone(),
            scope: t.scope.to_string(),
            packages: match &t.packages {
                NameScope::All => "every name".into(),
                NameScope::Matching(p) => p
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            created: format::ago(t.created_at, now),
            expires: t.expires_at.map_or_else(|| "never".into(), format::exact),
            used: t
                .last_used_at
                .map_or_else(|| "never".into(), |at| format::ago(at, now)),
        }
    }
}

#[derive(Deserialize, Default, Clone)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
    /// Name patterns, comma-separated; empty: every name.
    #[serde(default)]
    packages: String,
    /// The last day it works (`YYYY-MM-DD`), empty: never expires.
    #[serde(default)]
    expires: String,
}

#[derive(Deserialize)]
pub struct TokensQuery {
    #[serde(default)]
    all: Option<String>,
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
    all: bool,
    admin: bool,
    /// Whether this session may make tokens (a signed-in user, not a token).
    form: TokenForm,
    created: Option<(String, String)>,
    notice: Option<String>,
    error: Option<String>,
}

async fn tokens_page(
    who: &SignedIn,
    state: &WebState,
    all: bool,
    form: TokenForm,
) -> Result<TokensPage, WebError> {
    let admin = who.is(Role::Admin);
    let tokens = state
        .accounts
        .list_tokens(&who.credential, all && admin)
        .await?;
    Ok(TokensPage {
        layout: Layout::of("API tokens", who),
        tokens: tokens.iter().map(TokenRow::of).collect(),
        all: all && admin,
        admin,
        form,
        created: None,
        notice: None,
        error: None,
    })
}

pub async fn tokens(
    who: SignedIn,
    state: web::Data<WebState>,
    query: web::Query<TokensQuery>,
) -> Result<HttpResponse, WebError> {
    who.require(Role::Viewer)?;
    let form = TokenForm {
        scope: "read".into(),
        ..TokenForm::default()
    };
    let mut p = tokens_page(&who, &state, query.all.is_some(), form).await?;
    p.notice = (query.done.as_deref() == Some("revoked")).then(|| {
        "The token was revoked: it stops working on every replica within a second.".into()
    });
    page(&p)
}

fn request_of(f: &TokenForm) -> Result<TokenRequest, WebError> {
    let patterns: Vec<String> = f
        .packages
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let expires_at = match f.expires.trim() {
        "" => None,
        day => Some(
            NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|_| {
                    agentpkg_model::ValidationError::new(
                        "expires",
                        format!("{day:?} is not a day (YYYY-MM-DD)"),
                    )
                })?
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
                .ok_or_else(|| agentpkg_model::ValidationError::new("expires", "too far away"))?,
        ),
    };
    Ok(TokenRequest {
        name: f.name.trim().to_owned(),
        scope: f.scope.parse()?,
        packages: if patterns.is_empty() {
            NameScope::All
        } else {
            NameScope::matching(&patterns)?
        },
        expires_at,
    })
}

pub async fn create_token(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    let created = async {
        let request = request_of(&f)?;
        state
            .accounts
            .gate(&ctx.caller(&who.credential))
            .create_token(request)
            .await
            .map_err(WebError::from)
    }
    .await;
    match created {
        Ok((token, secret)) => {
            let mut p = tokens_page(
                &who,
                &state,
                false,
                TokenForm {
                    scope: "read".into(),
                    ..TokenForm::default()
                },
            )
            .await?;
            p.created = Some((token.name, secret.expose_secret().to_owned()));
            Ok(secured(HttpResponse::Created(), p.render()?))
        }
        Err(WebError::Refused(status, message)) => {
            let mut p = tokens_page(&who, &state, false, f).await?;
            p.error = Some(message);
            Ok(secured(HttpResponse::build(status), p.render()?))
        }
        Err(other) => Err(other),
    }
}

pub async fn revoke_token(
    who: SignedIn,
    state: web::Data<WebState>,
    ctx: RequestContext,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    who.check_csrf(&form.csrf)?;
    state
        .accounts
        .gate(&ctx.caller(&who.credential))
        .revoke_token(*path)
        .await?;
    Ok(see_other("/tokens?done=revoked"))
}
