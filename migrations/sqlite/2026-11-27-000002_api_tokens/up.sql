-- Every credential a user holds (their login tokens) names this number; changing it (role
-- change, password change) makes every one of them stop working.
ALTER TABLE users ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 0;

-- API tokens for machines. The secret is never stored: its SHA-256 is (a token is 190 bits
-- of randomness, so a fast hash is enough). Deleting the row revokes the token; deleting
-- the user deletes their tokens.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BIGINT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT      NOT NULL,
    scope        TEXT      NOT NULL CHECK (scope IN ('read', 'publish', 'admin')),
    -- Package name patterns, one per line; empty: every name.
    packages     TEXT      NOT NULL DEFAULT '',
    secret_hash  TEXT      NOT NULL UNIQUE,
    created_at   TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP,
    last_used_at TIMESTAMP
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);
