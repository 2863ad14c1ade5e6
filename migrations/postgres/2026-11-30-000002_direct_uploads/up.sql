-- Direct uploads granted and not yet completed: the client PUTs the bytes straight to
-- object storage through a presigned URL (which S3 accepts only with the announced size
-- and SHA-256), then asks for them to be published. Until expires_at the object is in
-- flight: reconciliation never takes it. Completing removes the row in the transaction
-- that marks the object in flight the usual way (uploads_in_flight).
CREATE TABLE direct_uploads (
    id               TEXT      PRIMARY KEY,
    user_id          BIGINT    REFERENCES users (id) ON DELETE CASCADE,
    name             TEXT      NOT NULL,
    version          TEXT      NOT NULL,
    platform         TEXT      NOT NULL,
    arch             TEXT      NOT NULL,
    file_size        BIGINT    NOT NULL CHECK (file_size > 0),
    checksum         TEXT      NOT NULL,
    filename         TEXT,
    description      TEXT      NOT NULL,
    storage_path     TEXT      NOT NULL UNIQUE,
    signature_format TEXT,
    signature        BYTEA,
    expires_at       TIMESTAMP NOT NULL,
    created_at       TIMESTAMP NOT NULL
);
CREATE INDEX direct_uploads_expires_idx ON direct_uploads (expires_at);
