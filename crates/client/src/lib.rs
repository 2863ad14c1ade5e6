//! A typed async client of agentpkg's REST API, for services and for the `agentpkg`
//! command: packages (list, find, latest, versions, yank, delete), uploads in one request
//! or resumable over tus, downloads that resume a partial file and verify its SHA-256
//! before it takes its name, users and API tokens.
//!
//! Errors keep the server's status, stable code and message ([`Error::Api`]); nothing
//! here prints.

mod download;
mod types;
mod upload;
mod verify;

use agentpkg_model::{Arch, ErrorCode, Platform, TokenScope};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

pub use download::{PullOptions, Pulled, Target};
pub use types::{
    CreatedToken, Me, NewUser, Package, PackageQuery, SignatureSummary, Token, User, VersionEntry,
};
pub use upload::{Published, Upload, UploadProgress};
pub use verify::verify_file;

/// What went wrong: the server's refusal, the connection, the file, or the bytes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused, with its HTTP status, stable code and message.
    #[error("{message}")]
    Api {
        status: u16,
        /// `None` when the answer had no error body, or a code this client does not know.
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("cannot reach the registry: {}", transport_cause(.0))]
    Transport(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A local file that cannot be read or written, named.
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Downloaded bytes whose SHA-256 is not the package's (the file is not kept).
    #[error("checksum mismatch: expected {expected}, got {got}")]
    Checksum { expected: String, got: String },
    /// A check failed (`reason`), and the partial file holding the refused bytes could not be
    /// removed. It never takes the file's name, and the next pull finds it wrong.
    #[error("{reason}; and the partial file {} could not be removed: {source}", path.display())]
    NotRemoved {
        reason: Box<Error>,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A signature that does not verify with the key given (or none to verify).
    #[error("{0}")]
    Signature(String),
    /// The server answered something this client cannot read.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// reqwest's own words ("error sending request for url (…)") and, after them, the deepest
/// cause ("Connection refused"), which is what a user can act on.
fn transport_cause(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let (outer, inner) = (e.to_string(), root.to_string());
    if std::ptr::addr_eq(root, e as &dyn std::error::Error) || outer.contains(&inner) {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}

impl Error {
    /// `source`, said of the file at `path`.
    pub fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::File {
            path: path.to_owned(),
            source,
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => StatusCode::from_u16(*status).ok(),
            _ => None,
        }
    }
}

/// A connection to one registry, with or without a credential. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the registry at `base` (`http://host:8080`), sending `token` (a session
    /// token or an `apk_…` API token) as the bearer when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("agentpkg-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let req = self.http.request(method, url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends and returns the response when it succeeded, else the server's error.
    pub(crate) async fn send(req: RequestBuilder) -> Result<reqwest::Response, Error> {
        let res = req.send().await?;
        if res.status().is_success() || res.status().is_redirection() {
            return Ok(res);
        }
        Err(api_error(res).await)
    }

    async fn json<T: DeserializeOwned>(req: RequestBuilder) -> Result<T, Error> {
        Self::read_json(Self::send(req).await?).await
    }

    /// The JSON body of an answer.
    pub(crate) async fn read_json<T: DeserializeOwned>(res: reqwest::Response) -> Result<T, Error> {
        res.json::<T>()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Signs in; returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, Error> {
        #[derive(serde::Deserialize)]
        struct Login {
            token: String,
        }
        let login: Login = Self::json(
            self.request(Method::POST, "/api/v1/auth/login")
                .json(&serde_json::json!({ "username": username, "password": password })),
        )
        .await?;
        Ok(login.token)
    }

    /// Who the credential is.
    /// Ends the session this client signed in with, on the server (an API token is not
    /// a session: the server refuses, and it is revoked instead).
    pub async fn logout(&self) -> Result<(), Error> {
        Self::send(self.request(Method::POST, "/api/v1/auth/logout")).await?;
        Ok(())
    }

    pub async fn me(&self) -> Result<Me, Error> {
        Self::json(self.request(Method::GET, "/api/v1/auth/me")).await
    }

    /// One page of packages and the total.
    pub async fn list(&self, query: &PackageQuery) -> Result<(Vec<Package>, u64), Error> {
        let res = Self::send(self.request(Method::GET, "/api/v1/packages").query(query)).await?;
        let total = res
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let packages = Self::read_json(res).await?;
        Ok((packages, total))
    }

    pub async fn get(&self, id: i64) -> Result<Package, Error> {
        Self::json(self.request(Method::GET, &format!("/api/v1/packages/{id}"))).await
    }

    /// The package at exactly these coordinates.
    pub async fn find(
        &self,
        name: &str,
        version: &str,
        platform: Platform,
        arch: Arch,
    ) -> Result<Package, Error> {
        Self::json(self.request(
            Method::GET,
            &format!("/api/v1/packages/{name}/{version}/{platform}/{arch}"),
        ))
        .await
    }

    /// The newest active build for a platform, optionally within a SemVer requirement.
    pub async fn latest(
        &self,
        name: &str,
        platform: Platform,
        arch: Arch,
        requirement: Option<&str>,
    ) -> Result<Package, Error> {
        let mut query = vec![
            ("name", name),
            ("platform", platform.as_str()),
            ("arch", arch.as_str()),
        ];
        if let Some(r) = requirement {
            query.push(("version", r));
        }
        Self::json(
            self.request(Method::GET, "/api/v1/packages/latest")
                .query(&query),
        )
        .await
    }

    /// Every version of a name, newest first, with its builds.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionEntry>, Error> {
        Self::json(self.request(Method::GET, &format!("/api/v1/packages/{name}/versions"))).await
    }

    /// Yanks (`false`) or restores (`true`) a package.
    pub async fn set_active(&self, id: i64, active: bool) -> Result<Package, Error> {
        Self::json(
            self.request(Method::PATCH, &format!("/api/v1/packages/{id}"))
                .json(&serde_json::json!({ "is_active": active })),
        )
        .await
    }

    pub async fn delete(&self, id: i64) -> Result<(), Error> {
        Self::send(self.request(Method::DELETE, &format!("/api/v1/packages/{id}"))).await?;
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<User>, Error> {
        Self::json(self.request(Method::GET, "/api/v1/users")).await
    }

    pub async fn create_user(&self, new: &NewUser) -> Result<User, Error> {
        Self::json(self.request(Method::POST, "/api/v1/users").json(new)).await
    }

    pub async fn delete_user(&self, id: i64) -> Result<(), Error> {
        Self::send(self.request(Method::DELETE, &format!("/api/v1/users/{id}"))).await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<Token>, Error> {
        Self::json(self.request(Method::GET, "/api/v1/tokens")).await
    }

    /// Makes an API token of `scope` (`read`, `publish`, `admin`); its secret is shown once.
    pub async fn create_token(
        &self,
        name: &str,
        scope: TokenScope,
        packages: &[String],
    ) -> Result<CreatedToken, Error> {
        let mut body = serde_json::json!({ "name": name, "scope": scope });
        if !packages.is_empty() {
            body["packages"] = serde_json::json!(packages);
        }
        Self::json(self.request(Method::POST, "/api/v1/tokens").json(&body)).await
    }

    pub async fn revoke_token(&self, id: i64) -> Result<(), Error> {
        Self::send(self.request(Method::DELETE, &format!("/api/v1/tokens/{id}"))).await?;
        Ok(())
    }
}

/// The server's error body, `{"error": {"code", "message"}}`, or the status alone.
pub(crate) async fn api_error(res: reqwest::Response) -> Error {
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().and_then(|c| c.parse().ok());
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| format!("the registry answered {status}"), str::to_owned);
    Error::Api {
        status: status.as_u16(),
        code,
        message,
    }
}
