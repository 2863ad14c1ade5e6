-- Resumable uploads (tus): a session per upload, whose offset, parts and SHA-256 state
-- live here so that any replica continues it, and a restart loses nothing. The bytes are
-- in object storage: parts of a multipart write (multipart_id, parts as JSON), and a
-- tail of fewer bytes than a part holds (tail_path). A request that adds bytes takes a
-- lease (lease_token, lease_until) at the offset it starts from, and commits what it
-- stored in one update. Until expires_at (moved on by every write) the session's objects
-- are in flight: reconciliation never takes them; after it, reconciliation removes them
-- and the row. A published session keeps its row (package_id) until it expires, so that
-- a client asking again learns that it is complete.
CREATE TABLE upload_sessions (
    id               TEXT      PRIMARY KEY,
    user_id          BIGINT    REFERENCES users (id) ON DELETE CASCADE,
    kind             TEXT      NOT NULL CHECK (kind IN ('whole', 'partial', 'final')),
    name             TEXT,
    version          TEXT,
    platform         TEXT,
    arch             TEXT,
    filename         TEXT,
    description      TEXT      NOT NULL,
    checksum         TEXT,
    signature_format TEXT,
    signature        BYTEA,
    metadata         TEXT      NOT NULL,
    parts_of         TEXT      NOT NULL,
    upload_length    BIGINT    NOT NULL CHECK (upload_length >= 0),
    upload_offset    BIGINT    NOT NULL DEFAULT 0 CHECK (upload_offset >= 0 AND upload_offset <= upload_length),
    storage_path     TEXT      NOT NULL UNIQUE,
    multipart_id     TEXT,
    parts            TEXT      NOT NULL DEFAULT '[]',
    tail_path        TEXT,
    tail_size        BIGINT    NOT NULL DEFAULT 0,
    hash_state       BYTEA     NOT NULL DEFAULT '',
    lease_token      TEXT,
    lease_until      TIMESTAMP,
    package_id       BIGINT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    expires_at       TIMESTAMP NOT NULL
);
CREATE INDEX upload_sessions_user_idx ON upload_sessions (user_id, expires_at);
CREATE INDEX upload_sessions_expires_idx ON upload_sessions (expires_at);
