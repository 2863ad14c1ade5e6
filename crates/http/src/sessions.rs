//! Session tokens (JWT, HS256, jwt-simple) and the short-lived download credentials of
//! OpAMP offers, both signed with the server's one secret.

use std::collections::HashSet;

use agentpkg_model::{ErrorCode, Role, User};
use agentpkg_packagemgr::Holder;
use chrono::{DateTime, Utc};
use jwt_simple::JWTError;
use jwt_simple::prelude::*;
use secrecy::{ExposeSecret, SecretString};

use crate::ApiError;

const ISSUER: &str = "agentpkg";

/// The signing secret: at least 32 bytes, never printed.
#[derive(Clone)]
pub struct JwtSecret(SecretString);

impl JwtSecret {
    pub const MIN_BYTES: usize = 32;

    pub fn new(secret: SecretString) -> Result<Self, String> {
        if secret.expose_secret().len() < Self::MIN_BYTES {
            return Err(format!(
                "auth.jwt_secret must be at least {} bytes",
                Self::MIN_BYTES
            ));
        }
        Ok(Self(secret))
    }
}

#[derive(Serialize, Deserialize)]
struct Extra {
    uid: i64,
    role: Role,
    /// The user's credentials version when the token was issued.
    ver: i64,
}

/// What a genuine session token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub user_id: i64,
    /// The user's credentials version when it was issued.
    pub version: i64,
    pub expires_at: DateTime<Utc>,
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    key: HS256Key,
    ttl_secs: u64,
    clock_skew: Duration,
    /// Session tokens already verified, by their text: what one names never changes, so
    /// it is verified once (signature, claims) and only its expiry checked again. Whether
    /// its user may still use it is not kept here: every request asks the accounts.
    verified: moka::sync::Cache<String, Session>,
}

/// Verified session tokens kept, at most.
const VERIFIED_SESSIONS: u64 = 10_000;

impl TokenIssuer {
    /// Tokens valid for `ttl_secs`, checked with `clock_skew_secs` of tolerance on `exp`,
    /// `nbf` and `iat`: replicas whose clocks differ by that much accept each other's
    /// tokens.
    pub fn new(secret: &JwtSecret, ttl_secs: u64, clock_skew_secs: u64) -> Self {
        Self {
            key: HS256Key::from_bytes(secret.0.expose_secret().as_bytes()),
            ttl_secs: ttl_secs.max(1),
            clock_skew: Duration::from_secs(clock_skew_secs),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_SESSIONS)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
        }
    }

    /// A token for `user`, whose credentials are at `version`, and when it expires.
    pub fn issue(&self, user: &User, version: i64) -> Result<(String, DateTime<Utc>), ApiError> {
        let claims = Claims::with_custom_claims(
            Extra {
                uid: user.id,
                role: user.role,
                ver: version,
            },
            Duration::from_secs(self.ttl_secs),
        )
        .with_issuer(ISSUER)
        .with_subject(&user.username);
        let expires = claims
            .expires_at
            .and_then(|t| DateTime::from_timestamp(i64::try_from(t.as_secs()).ok()?, 0))
            .ok_or_else(|| ApiError::internal("token without expiry"))?;
        let token = self.key.authenticate(claims).map_err(ApiError::internal)?;
        Ok((token, expires))
    }

    /// The user id and credentials version a token names, and when it expires, if it is
    /// genuine, current and ours.
    pub fn verify(&self, token: &str) -> Result<Session, ApiError> {
        if let Some(session) = self.known(token) {
            return Ok(session);
        }
        let session = self.verify_fully(token)?;
        self.verified.insert(token.to_owned(), session);
        Ok(session)
    }

    /// Whether `token` is a session token verified before and not expired since: a
    /// bearer that needs no other verification.
    pub fn known_session(&self, token: &str) -> bool {
        self.known(token).is_some()
    }

    /// The session a token verified before names, while it has not expired (with the
    /// same tolerance the verification allows); past that it is verified again, and
    /// refused as expired.
    fn known(&self, token: &str) -> Option<Session> {
        let session = self.verified.get(token)?;
        let skew = chrono::Duration::seconds(i64::try_from(self.clock_skew.as_secs()).ok()?);
        (Utc::now() <= session.expires_at + skew).then_some(session)
    }

    fn verify_fully(&self, token: &str) -> Result<Session, ApiError> {
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from_strings(&[ISSUER])),
            time_tolerance: Some(self.clock_skew),
            accept_future: false,
            ..Default::default()
        };
        let claims = self
            .key
            .verify_token::<Extra>(token, Some(options))
            .map_err(|e| match e.downcast_ref::<JWTError>() {
                Some(JWTError::TokenHasExpired) => ApiError::new(
                    ErrorCode::TokenExpired,
                    "the token has expired; log in again",
                ),
                _ => ApiError::new(ErrorCode::InvalidToken, "the token is not valid"),
            })?;
        // Every token this issuer makes has an expiry; one without is not ours.
        let expires_at = claims
            .expires_at
            .and_then(|t| DateTime::from_timestamp(i64::try_from(t.as_secs()).ok()?, 0))
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the token is not valid"))?;
        Ok(Session {
            user_id: claims.custom.uid,
            version: claims.custom.ver,
            expires_at,
        })
    }
}

/// Issuer of download credentials: a session token never verifies as one, nor one as a
/// session token.
const DOWNLOAD_ISSUER: &str = "agentpkg-download";

#[derive(Serialize, Deserialize)]
struct DownloadClaims {
    /// The one package it downloads.
    pkg: i64,
    /// The API token it was made for, which must still hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tok: Option<i64>,
    /// Or the user and credentials version of the session it was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ver: Option<i64>,
}

impl DownloadClaims {
    fn holder(&self) -> Option<Holder> {
        match (self.tok, self.uid, self.ver) {
            (Some(id), _, _) => Some(Holder::Token(id)),
            (None, Some(user_id), Some(version)) => Some(Holder::Session { user_id, version }),
            _ => None,
        }
    }
}

impl TokenIssuer {
    /// A credential that downloads package `package_id`, and nothing else, for `ttl`, and
    /// only while `holder` (the credential it was made for) holds.
    pub fn issue_download(
        &self,
        package_id: i64,
        holder: Holder,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let (tok, uid, ver) = match holder {
            Holder::Token(id) => (Some(id), None, None),
            Holder::Session { user_id, version } => (None, Some(user_id), Some(version)),
        };
        let claims = Claims::with_custom_claims(
            DownloadClaims {
                pkg: package_id,
                tok,
                uid,
                ver,
            },
            ttl,
        )
        .with_issuer(DOWNLOAD_ISSUER);
        self.key.authenticate(claims).map_err(ApiError::internal)
    }

    /// Whether `token` says it is a download credential (names its issuer), read without
    /// verifying it: which of the two verifications a bearer gets, so that a session token
    /// is not first verified, and refused, as a download credential on every request.
    /// Either verification still checks everything.
    pub fn says_download(&self, token: &str) -> bool {
        #[derive(Deserialize)]
        struct Issuer {
            iss: Option<String>,
        }
        token
            .split('.')
            .nth(1)
            .and_then(|payload| Base64UrlSafeNoPadding::decode_to_vec(payload, None).ok())
            .and_then(|json| serde_json::from_slice::<Issuer>(&json).ok())
            .is_some_and(|claims| claims.iss.as_deref() == Some(DOWNLOAD_ISSUER))
    }

    /// The package a download credential is for, and what it is bound to, if it is
    /// genuine and current. One made before credentials were bound to a holder has none
    /// (it lives out its short expiry).
    pub fn verify_download(&self, token: &str) -> Option<(i64, Option<Holder>)> {
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from_strings(&[DOWNLOAD_ISSUER])),
            time_tolerance: Some(self.clock_skew),
            accept_future: false,
            ..Default::default()
        };
        let claims = self
            .key
            .verify_token::<DownloadClaims>(token, Some(options))
            .ok()?;
        claims.expires_at?;
        Some((claims.custom.pkg, claims.custom.holder()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(secret: &str) -> TokenIssuer {
        TokenIssuer::new(
            &JwtSecret::new(SecretString::from(secret.to_owned())).unwrap(),
            3600,
            60,
        )
    }

    #[test]
    fn only_a_download_credential_says_so_and_saying_so_verifies_nothing() {
        let ours = issuer("the registry's secret of at least 32 bytes");
        let user = User {
            id: 7,
            username: "ci".into(),
            role: Role::Viewer,
            created_at: Utc::now(),
        };
        let (session, _) = ours.issue(&user, 1).unwrap();
        let download = ours
            .issue_download(42, Holder::Token(3), Duration::from_secs(60))
            .unwrap();
        assert!(!ours.says_download(&session));
        assert!(ours.says_download(&download));
        assert_eq!(
            ours.verify_download(&download),
            Some((42, Some(Holder::Token(3))))
        );
        assert!(!ours.says_download("apk_not-a-jwt"));
        assert!(!ours.says_download("a.%%%.c"));

        // One signed with another secret says it is a download credential, and is not one.
        let forged = issuer("someone else's secret, also 32 bytes long")
            .issue_download(42, Holder::Token(3), Duration::from_secs(60))
            .unwrap();
        assert!(ours.says_download(&forged));
        assert_eq!(ours.verify_download(&forged), None);
    }

    #[test]
    fn a_session_verified_once_is_still_refused_once_it_expires() {
        let secret = JwtSecret::new(SecretString::from(
            "the registry's secret of at least 32 bytes".to_owned(),
        ))
        .unwrap();
        // A one-second token, no tolerance.
        let ours = TokenIssuer::new(&secret, 1, 0);
        let user = User {
            id: 7,
            username: "ci".into(),
            role: Role::Viewer,
            created_at: Utc::now(),
        };
        let (token, _) = ours.issue(&user, 3).unwrap();
        let first = ours.verify(&token).unwrap();
        assert_eq!((first.user_id, first.version), (7, 3));
        assert!(ours.known_session(&token));
        assert_eq!(ours.verify(&token).unwrap(), first);
        // Another secret's token with the same text is never taken for a known one.
        let theirs = TokenIssuer::new(
            &JwtSecret::new(SecretString::from(
                "someone else's secret, also 32 bytes long".to_owned(),
            ))
            .unwrap(),
            1,
            0,
        );
        assert!(!theirs.known_session(&token));
        assert!(theirs.verify(&token).is_err());

        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(!ours.known_session(&token));
        let expired = ours.verify(&token).unwrap_err();
        assert_eq!(expired.code, ErrorCode::TokenExpired, "{expired:?}");
    }
}
