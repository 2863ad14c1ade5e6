//! Every error code the API sends, with its HTTP status and what it means. The API's
//! error type carries one of these (never a string), the OpenAPI document lists them from
//! here and `docs/errors.md` is checked against them by a test.

use crate::closed_set::closed_set;

closed_set!(
    /// A stable, machine-readable error code, sent as `{"error": {"code": …}}`.
    ErrorCode, "code", {
        InvalidField => "invalid_field",
        MissingField => "missing_field",
        DuplicateField => "duplicate_field",
        UnknownField => "unknown_field",
        InvalidJson => "invalid_json",
        InvalidQuery => "invalid_query",
        InvalidPath => "invalid_path",
        InvalidMultipart => "invalid_multipart",
        InvalidProtobuf => "invalid_protobuf",
        IncompleteBody => "incomplete_body",
        MalformedSignature => "malformed_signature",
        InvalidKey => "invalid_key",
        NotASession => "not_a_session",
        MissingToken => "missing_token",
        InvalidToken => "invalid_token",
        TokenExpired => "token_expired",
        TokenRevoked => "token_revoked",
        InvalidCredentials => "invalid_credentials",
        Forbidden => "forbidden",
        CsrfFailed => "csrf_failed",
        CrossOrigin => "cross_origin",
        NotFound => "not_found",
        BodyTimeout => "body_timeout",
        Conflict => "conflict",
        SameBytes => "same_bytes",
        UploadIncomplete => "upload_incomplete",
        OffsetMismatch => "offset_mismatch",
        RolloutConflict => "rollout_conflict",
        UnsupportedTusVersion => "unsupported_tus_version",
        PayloadTooLarge => "payload_too_large",
        PastUploadLength => "past_upload_length",
        UnsupportedMediaType => "unsupported_media_type",
        RangeNotSatisfiable => "range_not_satisfiable",
        ChecksumMismatch => "checksum_mismatch",
        SizeMismatch => "size_mismatch",
        SignatureInvalid => "signature_invalid",
        SignatureRequired => "signature_required",
        UploadLocked => "upload_locked",
        TooManyAttempts => "too_many_attempts",
        TooManySessions => "too_many_sessions",
        TooManyGrants => "too_many_grants",
        UploadQuota => "upload_quota",
        TooManyConnections => "too_many_connections",
        RequestChecksumMismatch => "request_checksum_mismatch",
        Internal => "internal",
        DirectUploadUnsupported => "direct_upload_unsupported",
        ResumableUploadUnsupported => "resumable_upload_unsupported",
        DatabaseUnavailable => "database_unavailable",
        StorageUnavailable => "storage_unavailable",
        TooManyUploads => "too_many_uploads",
        Busy => "busy",
    }
);

impl ErrorCode {
    /// The HTTP status every response with this code has.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidField | MissingField | DuplicateField | UnknownField | InvalidJson
            | InvalidQuery | InvalidPath | InvalidMultipart | InvalidProtobuf | IncompleteBody
            | MalformedSignature | InvalidKey | NotASession => 400,
            MissingToken | InvalidToken | TokenExpired | TokenRevoked | InvalidCredentials => 401,
            Forbidden | CsrfFailed | CrossOrigin => 403,
            NotFound => 404,
            BodyTimeout => 408,
            Conflict | SameBytes | UploadIncomplete | OffsetMismatch | RolloutConflict => 409,
            UnsupportedTusVersion => 412,
            PayloadTooLarge | PastUploadLength => 413,
            UnsupportedMediaType => 415,
            RangeNotSatisfiable => 416,
            ChecksumMismatch | SizeMismatch | SignatureInvalid | SignatureRequired => 422,
            UploadLocked => 423,
            TooManyAttempts | TooManySessions | TooManyGrants | UploadQuota
            | TooManyConnections => 429,
            // tus's own status for a checksum that does not match.
            RequestChecksumMismatch => 460,
            Internal => 500,
            DirectUploadUnsupported | ResumableUploadUnsupported => 501,
            DatabaseUnavailable | StorageUnavailable | TooManyUploads | Busy => 503,
        }
    }

    /// What the code means, in one line (the `Meaning` column of `docs/errors.md`).
    pub fn meaning(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidField => "a field's value is not valid; `field` names it",
            MissingField => "a required field is absent; `field` names it",
            DuplicateField => "a form field was sent twice",
            UnknownField => "a form or JSON field the route does not take",
            InvalidJson => "the body is not JSON of the expected shape",
            InvalidQuery => "a query parameter is malformed or unknown",
            InvalidPath => "a path segment is malformed (an id that is not a number, say)",
            InvalidMultipart => "the multipart body cannot be read as a form upload",
            InvalidProtobuf => "the body is not an OpAMP `AgentToServer` message (`/v1/opamp`)",
            IncompleteBody => "the request body could not be read to its end",
            MalformedSignature => "the signature cannot be parsed in the format it names",
            InvalidKey => "the key is not a usable OpenPGP public key",
            NotASession => {
                "the route ends a session, and an API token was sent (revoke it instead)"
            }
            MissingToken => "no credential: log in, or send `Authorization: Bearer <token>`",
            InvalidToken => "the credential is malformed or its signature does not verify",
            TokenExpired => "the token has expired; log in again",
            TokenRevoked => "the token was revoked, or its user deleted or changed; log in again",
            InvalidCredentials => "wrong username or password",
            Forbidden => "the role, token scope, name limits or ownership do not allow it",
            CsrfFailed => "a cookie-signed change without the page's `X-CSRF-Token`",
            CrossOrigin => "an OpAMP WebSocket signed in by cookie from another site",
            NotFound => "no such package, version, user, team, token, key, agent or assignment",
            BodyTimeout => "the body stalled, or came slower than the minimum rate",
            Conflict => "the thing exists already, or the change conflicts with its state",
            SameBytes => "these bytes are another version of the name (admins: `republish=true`)",
            UploadIncomplete => "a direct upload's file or a partial upload is not complete",
            OffsetMismatch => "a tus `PATCH` at another offset than the upload's",
            RolloutConflict => "a rollout is already moving, or its state does not allow the step",
            UnsupportedTusVersion => "no `Tus-Resumable` header, or another version",
            PayloadTooLarge => "the body is larger than the configured limit",
            PastUploadLength => "a tus `PATCH` beyond `Upload-Length`",
            UnsupportedMediaType => "the `Content-Type` is not one the route takes",
            RangeNotSatisfiable => "the `Range` lies outside the file",
            ChecksumMismatch => "the bytes do not have the SHA-256 the client declared",
            SizeMismatch => "the bytes are not as long as the client declared",
            SignatureInvalid => "the signature does not verify, or its signer is not trusted",
            SignatureRequired => "`signing.required` is on and no verifiable signature came",
            UploadLocked => "another request is writing to the upload; retry",
            TooManyAttempts => "too many failed logins; wait for `Retry-After`",
            TooManySessions => "too many open resumable uploads for the user",
            TooManyGrants => "too many open direct-upload grants for the user",
            UploadQuota => "the user's unfinished uploads hold too many bytes",
            TooManyConnections => "too many OpAMP WebSockets on the replica or the credential",
            RequestChecksumMismatch => {
                "the tus `Upload-Checksum` does not match; nothing of the request is kept"
            }
            Internal => "a bug or an unexpected state; the detail is in the server log only",
            DirectUploadUnsupported => "direct uploads need the s3 storage backend",
            ResumableUploadUnsupported => "this embedding keeps no resumable upload sessions",
            DatabaseUnavailable => {
                "the database is down, or a statement waited past `database.lock_timeout_secs`"
            }
            StorageUnavailable => "object storage is down or refused; retry later",
            TooManyUploads => "too many uploads in progress on the replica; retry shortly",
            Busy => "too many logins being checked at once; retry after a second",
        }
    }

    /// Whether a client may send the same request again after `Retry-After`.
    pub fn retryable(self) -> bool {
        matches!(self.status(), 423 | 503) || self == ErrorCode::TooManyAttempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_an_error_status_and_has_a_meaning() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.status()), "{code}");
            assert!(!code.meaning().is_empty(), "{code}");
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
        assert_eq!(ErrorCode::NotFound.status(), 404);
        assert_eq!(ErrorCode::RequestChecksumMismatch.status(), 460);
        assert_eq!(
            "too_many_attempts".parse::<ErrorCode>().unwrap(),
            ErrorCode::TooManyAttempts
        );
    }
}

closed_set!(
    /// A kind of thing a request can name that may not exist (or may not be visible to the
    /// caller, which is told the same).
    Entity, "entity", {
        Package => "package",
        /// The newest active build a `latest` query asks for.
        LatestBuild => "latest_build",
        User => "user",
        Team => "team",
        Token => "token",
        SigningKey => "signing_key",
        SigstoreIdentity => "sigstore_identity",
        Signature => "signature",
        Upload => "upload",
        Agent => "agent",
        Assignment => "assignment",
        Rollout => "rollout",
    }
);

impl Entity {
    /// What a `404 not_found` says for it.
    pub fn not_found(self) -> &'static str {
        match self {
            Entity::Package => "package not found",
            Entity::LatestBuild => {
                "no active build matches: yanked builds are never the latest (fetch one by its exact coordinates), and pre-releases only with prerelease=true"
            }
            Entity::User => "user not found",
            Entity::Team => "team not found",
            Entity::Token => "token not found",
            Entity::SigningKey => "signing key not found",
            Entity::SigstoreIdentity => "sigstore identity not found",
            Entity::Signature => "the package has no signature",
            Entity::Upload => "no such upload (completed, expired, or not yours)",
            Entity::Agent => "agent not found",
            Entity::Assignment => "assignment not found",
            Entity::Rollout => "no such rollout of this assignment",
        }
    }
}
