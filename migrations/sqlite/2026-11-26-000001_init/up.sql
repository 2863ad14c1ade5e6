-- Same schema as migrations/postgres, in SQLite's dialect. SQLite compares TEXT with
-- BINARY collation by default, which is the byte order version_sort needs.
-- Package bytes, content-addressed: one object per distinct SHA-256, shared by every
-- package with those bytes. A blob row exists exactly while packages refer to it.
CREATE TABLE blobs (
    checksum     TEXT      PRIMARY KEY,
    storage_path TEXT      NOT NULL UNIQUE,
    file_size    BIGINT    NOT NULL CHECK (file_size >= 0),
    created_at   TIMESTAMP NOT NULL
);

CREATE TABLE packages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT      NOT NULL,
    version      TEXT      NOT NULL,
    version_sort TEXT      NOT NULL,
    prerelease   BOOLEAN   NOT NULL,
    platform     TEXT      NOT NULL,
    arch         TEXT      NOT NULL,
    file_size    BIGINT    NOT NULL CHECK (file_size >= 0),
    -- The blob holding the bytes; a blob cannot go while a package refers to it.
    checksum     TEXT      NOT NULL REFERENCES blobs (checksum),
    -- The blob's object key, copied: a blob's key never changes.
    storage_path TEXT      NOT NULL,
    filename     TEXT      NOT NULL,
    description  TEXT      NOT NULL DEFAULT '',
    is_active    BOOLEAN   NOT NULL DEFAULT TRUE,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);

CREATE UNIQUE INDEX packages_coordinates_key
    ON packages (name, platform, arch, version_sort);
CREATE INDEX packages_active_name_version_idx
    ON packages (is_active, name, version_sort DESC);

-- "Does any other package use these bytes?" on delete.
CREATE INDEX packages_checksum_idx ON packages (checksum);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT      NOT NULL UNIQUE,
    password_hash TEXT      NOT NULL,
    role          TEXT      NOT NULL CHECK (role IN ('admin', 'publisher', 'viewer')),
    created_at    TIMESTAMP NOT NULL
);
