-- Sessions signed out before they expired: the SHA-256 of the session token (never the
-- token), until when it would have been valid. A session whose hash is here is refused on
-- every replica; rows past their expiry are removed when the next sign-out is recorded.
CREATE TABLE ended_sessions (
    token_hash TEXT      PRIMARY KEY,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX ended_sessions_expires_idx ON ended_sessions (expires_at);
